// A sign-up service's side of invitations, in TypeScript: check the code the
// user typed, hold a use of it while they fill in the form (Reserve),
// complete the sign-up (Redeem with a requestId, so a retry is safe), turn
// every refusal into what the form says, and tell inviters from the
// `redeemed` events on NATS JetStream that a friend joined.
//
//   npm ci && npm run build
//   node dist/signup.js CODE --target 127.0.0.1:50051 --nats nats://127.0.0.1:4222
//
// INVITATIONS_TOKEN, if set, is sent as the bearer token (a `signup` scope).
// Types come from proto/ (proto-loader-gen-types, `npm run generate`). Run as
// a demo, it signs up one invitee with CODE and exits non-zero if anything
// answers other than documented.

import { randomUUID } from "node:crypto";
import { existsSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { AckPolicy, connect, type JetStreamClient } from "nats";
import protobuf from "protobufjs";

import type { ProtoGrpcType } from "./generated/invitations.js";
import type { CheckCodeResponse__Output } from "./generated/invitations/v1/CheckCodeResponse.js";
import type { RedeemResponse__Output } from "./generated/invitations/v1/RedeemResponse.js";
import type { InvitationEvent__Output } from "./generated/invitations/v1/InvitationEvent.js";
import type { InvitationServiceClient } from "./generated/invitations/v1/InvitationService.js";
import type { Redeemed__Output } from "./generated/invitations/v1/Redeemed.js";
import type { Reservation__Output } from "./generated/invitations/v1/Reservation.js";
import type { ReserveResponse__Output } from "./generated/invitations/v1/ReserveResponse.js";
import type { ErrorInfo__Output } from "./generated/google/rpc/ErrorInfo.js";
import type { RetryInfo__Output } from "./generated/google/rpc/RetryInfo.js";
import type { Status__Output } from "./generated/google/rpc/Status.js";

// What the sign-up form tells the user for each reason (ErrorInfo.reason of
// a refusal, or CheckCode's reason). Any other reason (INVALID_ARGUMENT,
// REQUEST_ID_REUSED, NOT_FOUND, UNAUTHENTICATED, PERMISSION_DENIED, INTERNAL)
// is a bug or an outage on our side, not the user's business: it is thrown.
export const USER_MESSAGES: Record<string, string> = {
  INVALID_CODE_FORMAT: "That is not an invitation code: check it and try again.",
  CODE_CHECKSUM_MISMATCH: "There is a typo in the code: check each character.",
  CODE_NOT_FOUND: "We do not know this code.",
  ALREADY_REDEEMED: "This invitation has already been used.",
  EXPIRED: "This invitation has expired.",
  REVOKED: "This invitation was withdrawn.",
  INVITER_DISABLED: "This invitation cannot be used at the moment.",
  RESERVED: "Someone is signing up with this invitation right now; try again later.",
  SELF_INVITE: "You cannot use your own invitation.",
  ALREADY_INVITED: "You have already joined.",
  INVITE_CYCLE: "You cannot join through this invitation.",
  EMAIL_MISMATCH: "This invitation is for another e-mail address.",
  DISPOSABLE_EMAIL: "Please use a permanent e-mail address.",
  IP_ALREADY_USED: "An invitation was used from your network recently; try again later.",
  SAME_IP_AS_INVITER: "This invitation cannot be used from your inviter's network.",
  RESERVATION_EXPIRED: "Your sign-up took too long: enter the code again.",
  RESERVATION_RELEASED: "Your sign-up was cancelled: enter the code again.",
  RESERVATION_COMPLETED: "This sign-up is already complete.",
  TOO_MANY_ATTEMPTS: "Too many attempts: try again later.",
};

// UNAVAILABLE (OVERLOADED, or the database unreachable) is worth retrying,
// and safe to retry: every call that changes something carries a requestId.
const RETRY_UNAVAILABLE = JSON.stringify({
  methodConfig: [{
    name: [{ service: "invitations.v1.InvitationService" }],
    retryPolicy: {
      maxAttempts: 4, initialBackoff: "0.1s", maxBackoff: "1s",
      backoffMultiplier: 2, retryableStatusCodes: ["UNAVAILABLE"],
    },
  }],
});

// The service's proto/, and google/rpc/{status,error_details}.proto copied
// from googleapis into ./proto (the npm package google-proto-files has them
// too, among 80 MB of others). Loaded for the client, and to decode error
// details and events with the options the generated types assume.
const here = path.dirname(fileURLToPath(import.meta.url));
const includeDirs = [path.join(here, "../../../proto"), path.join(here, "../proto")];
const shape = { longs: String, enums: String, defaults: true, oneofs: true };
const root = new protobuf.Root();
root.resolvePath = (_origin, target) => includeDirs.map((d) => path.join(d, target)).find(existsSync) ?? target;
root.loadSync(["invitations/v1/events.proto", "google/rpc/status.proto", "google/rpc/error_details.proto"]);

function decode<T>(typeName: string, bytes: Uint8Array): T {
  const type = root.lookupType(typeName);
  return type.toObject(type.decode(bytes), shape) as T;
}

/** A refusal to show the user: reason is one of USER_MESSAGES. */
export class Refused extends Error {
  constructor(readonly reason: string, readonly retryAfterSeconds?: number) {
    super(USER_MESSAGES[reason]);
  }
}

/** The Refused in an error's google.rpc.Status details, or the error itself
 * when it is not the user's to fix. */
export function refusal(error: grpc.ServiceError): Error {
  const [bin] = error.metadata?.get("grpc-status-details-bin") ?? [];
  if (!(bin instanceof Buffer)) return error;
  let reason = "";
  let retryAfterSeconds: number | undefined;
  for (const detail of decode<Status__Output>("google.rpc.Status", bin).details) {
    const type = detail.type_url.slice(detail.type_url.lastIndexOf("/") + 1);
    if (type === "google.rpc.ErrorInfo") {
      reason = decode<ErrorInfo__Output>(type, detail.value).reason;
    } else if (type === "google.rpc.RetryInfo") {
      retryAfterSeconds = Number(decode<RetryInfo__Output>(type, detail.value).retryDelay?.seconds ?? 0);
    }
  }
  return reason in USER_MESSAGES ? new Refused(reason, retryAfterSeconds) : error;
}

/** The three calls a sign-up makes. clientIp is the user's address (for the
 * service's abuse checks); each call rejects with Refused or the
 * grpc.ServiceError. */
export class Invitations {
  private readonly metadata = new grpc.Metadata();

  constructor(private readonly client: InvitationServiceClient, token?: string) {
    if (token) this.metadata.set("authorization", `Bearer ${token}`);
  }

  private unary<T>(start: (metadata: grpc.Metadata, options: grpc.CallOptions, done: grpc.requestCallback<T>) => void) {
    return new Promise<T>((resolve, reject) =>
      start(this.metadata, { deadline: Date.now() + 5000 }, (error, response) =>
        error ? reject(refusal(error)) : resolve(response!)));
  }

  check(code: string, clientIp: string) {
    return this.unary<CheckCodeResponse__Output>((m, o, done) => this.client.checkCode({ code, clientIp }, m, o, done));
  }

  async reserve(code: string, email: string, clientIp: string, requestId: string): Promise<Reservation__Output> {
    const request = { code, email, clientIp, requestId, ttl: { seconds: 15 * 60 } };
    const response = await this.unary<ReserveResponse__Output>((m, o, done) => this.client.reserve(request, m, o, done));
    return response.reservation!;
  }

  async redeem(reservationId: string, inviteeId: string, clientIp: string, requestId: string) {
    const request = { reservationId, inviteeId, clientIp, requestId };
    const response = await this.unary<RedeemResponse__Output>((m, o, done) => this.client.redeem(request, m, o, done));
    return response.invitation!;
  }
}

/** Hands each `redeemed` event to handle(eventId, redeemed) once, and acks it
 * after; returns when handle returns true. Delivery is at least once: a real
 * consumer remembers the ids it handled (here, for this run). */
export async function consumeRedeemed(
  js: JetStreamClient, durable: string, handle: (eventId: string, redeemed: Redeemed__Output) => boolean,
) {
  const jsm = await js.jetstreamManager();
  await jsm.consumers.add("INVITATIONS", {
    durable_name: durable, filter_subject: "invitations.v1.redeemed", ack_policy: AckPolicy.Explicit,
  });
  const messages = await (await js.consumers.get("INVITATIONS", durable)).consume();
  const handled = new Set<string>();
  for await (const message of messages) {
    const event = decode<InvitationEvent__Output>("invitations.v1.InvitationEvent", message.data);
    let done = false;
    if (!handled.has(event.id) && event.redeemed) {
      done = handle(event.id, event.redeemed);
      handled.add(event.id);
    }
    message.ack();
    if (done) return messages.stop();
  }
}

function expect(condition: boolean, what: string) {
  console.log(`${condition ? "ok  " : "FAIL"} ${what}`);
  if (!condition) process.exit(1);
}

/** The code with its last symbol changed (a typo the check symbol catches). */
const mistyped = (code: string) => code.slice(0, -1) + (code.endsWith("A") ? "B" : "A");

async function demo() {
  const { positionals: [code], values: args } = parseArgs({
    allowPositionals: true,
    options: {
      target: { type: "string", default: "127.0.0.1:50051" },
      nats: { type: "string", default: "nats://127.0.0.1:4222" },
      invitee: { type: "string", default: `node-${randomUUID().slice(0, 8)}` },
      email: { type: "string", default: "" },
      "client-ip": { type: "string", default: "198.51.100.7" },
      durable: { type: "string", default: "signup-example-node" },
    },
  });
  if (!code) throw new Error("usage: signup.js CODE [--target host:port] [--nats url]");
  const ip = args["client-ip"];

  const definition = protoLoader.loadSync("invitations/v1/invitations.proto", { ...shape, includeDirs });
  const proto = grpc.loadPackageDefinition(definition) as unknown as ProtoGrpcType;
  const client = new proto.invitations.v1.InvitationService(args.target, grpc.credentials.createInsecure(), {
    "grpc.service_config": RETRY_UNAVAILABLE,
  });
  const invitations = new Invitations(client, process.env.INVITATIONS_TOKEN);

  // The form checks what the user typed before asking for anything else.
  let check = await invitations.check(mistyped(code), ip);
  expect(!check.redeemable && check.reason === "CODE_CHECKSUM_MISMATCH",
    `a typo: the form says "${USER_MESSAGES[check.reason]}"`);
  check = await invitations.check(code, ip);
  expect(check.redeemable, `CheckCode: redeemable, from "${check.inviterId}"`);

  const reservation = await invitations.reserve(code, args.email, ip, randomUUID());
  expect(reservation.state === "HELD", "Reserve holds a use while the user fills in the form");

  // The request id is made once per sign-up and kept with it, so a retry
  // after a lost answer gets the first answer back.
  const requestId = randomUUID();
  const invitation = await invitations.redeem(reservation.id, args.invitee, ip, requestId);
  const retried = await invitations.redeem(reservation.id, args.invitee, ip, requestId);
  expect(invitation.inviteeId === args.invitee && retried.id === invitation.id,
    `Redeem: ${args.invitee} joined, invited by ${invitation.inviterId}; the retry got the same answer`);

  const spent = await invitations.reserve(code, args.email, ip, randomUUID()).catch((e: unknown) => e);
  expect(spent instanceof Refused && spent.reason === "ALREADY_REDEEMED",
    `the spent code: the form says "${(spent as Error).message}"`);

  // Someone elsewhere guessing reservation ids: each is a failed attempt,
  // and past the service's limit it says when to come back (RetryInfo), for
  // an hour by default.
  let throttled: Refused | undefined;
  for (let i = 0; i < 20 && !throttled; i++) {
    const guess = invitations.redeem(randomUUID(), "node-guesser", "192.0.2.77", randomUUID());
    const error = await guess.catch((e: unknown) => e);
    if (error instanceof Refused) throttled = error;
    else if ((error as grpc.ServiceError).code !== grpc.status.NOT_FOUND) throw error;
  }
  expect(throttled?.reason === "TOO_MANY_ATTEMPTS" && throttled.retryAfterSeconds !== undefined,
    `guessing: throttled, retry after ${throttled?.retryAfterSeconds} s`);
  client.close();

  const nc = await connect({ servers: args.nats });
  try {
    const seen = consumeRedeemed(nc.jetstream(), args.durable, (eventId, redeemed) => {
      console.log(`     event ${eventId}: tell ${redeemed.inviterId || "(unowned)"} that ${redeemed.inviteeId} joined`);
      return redeemed.inviteeId === args.invitee && redeemed.viaReservation;
    });
    const timeout = new Promise((_, reject) => {
      setTimeout(() => reject(new Error("no redeemed event in 30 s")), 30_000).unref();
    });
    await Promise.race([seen, timeout]);
    expect(true, "the redeemed event arrived from JetStream");
  } finally {
    await nc.close();
  }
}

await demo();
