"""A sign-up service's side of invitations, in Python: check the code the
user typed, hold a use of it while they fill in the form (Reserve), complete
the sign-up (Redeem with a request_id, so a retry is safe), turn every
refusal into what the form says, and tell inviters from the `redeemed`
events on NATS JetStream that a friend joined.

    python signup.py --target 127.0.0.1:50051 --nats nats://127.0.0.1:4222 CODE

INVITATIONS_TOKEN, if set, is sent as the bearer token (a `signup` scope).
Stubs: python -m grpc_tools.protoc (see the README, "Clients in Python and
Node"). Run as a demo, it signs up one invitee with CODE and exits non-zero
if anything answers other than documented."""

import argparse
import asyncio
import json
import os
import sys
import uuid
from datetime import timedelta

import grpc
import nats
from google.protobuf.duration_pb2 import Duration
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from invitations.v1 import events_pb2
from invitations.v1 import invitations_pb2 as pb
from invitations.v1 import invitations_pb2_grpc as rpc

# What the sign-up form tells the user for each reason (ErrorInfo.reason of
# a refusal, or CheckCode's reason). Any other reason (INVALID_ARGUMENT,
# REQUEST_ID_REUSED, NOT_FOUND, UNAUTHENTICATED, PERMISSION_DENIED, INTERNAL)
# is a bug or an outage on our side, not the user's business: it is raised.
USER_MESSAGES = {
    "INVALID_CODE_FORMAT": "That is not an invitation code: check it and try again.",
    "CODE_CHECKSUM_MISMATCH": "There is a typo in the code: check each character.",
    "CODE_NOT_FOUND": "We do not know this code.",
    "ALREADY_REDEEMED": "This invitation has already been used.",
    "EXPIRED": "This invitation has expired.",
    "REVOKED": "This invitation was withdrawn.",
    "INVITER_DISABLED": "This invitation cannot be used at the moment.",
    "RESERVED": "Someone is signing up with this invitation right now; try again later.",
    "SELF_INVITE": "You cannot use your own invitation.",
    "ALREADY_INVITED": "You have already joined.",
    "INVITE_CYCLE": "You cannot join through this invitation.",
    "EMAIL_MISMATCH": "This invitation is for another e-mail address.",
    "DISPOSABLE_EMAIL": "Please use a permanent e-mail address.",
    "IP_ALREADY_USED": "An invitation was used from your network recently; try again later.",
    "SAME_IP_AS_INVITER": "This invitation cannot be used from your inviter's network.",
    "RESERVATION_EXPIRED": "Your sign-up took too long: enter the code again.",
    "RESERVATION_RELEASED": "Your sign-up was cancelled: enter the code again.",
    "RESERVATION_COMPLETED": "This sign-up is already complete.",
    "TOO_MANY_ATTEMPTS": "Too many attempts: try again later.",
}

# UNAVAILABLE (OVERLOADED, or the database unreachable) is worth retrying,
# and safe to retry: every call that changes something carries a request_id.
RETRY_UNAVAILABLE = json.dumps({"methodConfig": [{
    "name": [{"service": "invitations.v1.InvitationService"}],
    "retryPolicy": {"maxAttempts": 4, "initialBackoff": "0.1s", "maxBackoff": "1s",
                    "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]},
}]})


class Refused(Exception):
    """A refusal to show the user: reason is one of USER_MESSAGES."""

    def __init__(self, reason: str, retry_after: timedelta | None = None):
        super().__init__(USER_MESSAGES[reason])
        self.reason = reason
        self.retry_after = retry_after


def refusal(error: grpc.RpcError) -> Exception:
    """The Refused in an error's google.rpc.Status details, or the error
    itself when it is not the user's to fix."""
    status = rpc_status.from_call(error)
    reason, retry_after = None, None
    for detail in status.details if status else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason = info.reason
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            retry_after = retry.retry_delay.ToTimedelta()
    return Refused(reason, retry_after) if reason in USER_MESSAGES else error


class Invitations:
    """The three calls a sign-up makes. client_ip is the user's address
    (for the service's abuse checks); each call raises Refused or the
    grpc.RpcError."""

    def __init__(self, channel: grpc.aio.Channel, token: str | None):
        self._stub = rpc.InvitationServiceStub(channel)
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()

    async def _call(self, method, request):
        try:
            return await method(request, metadata=self._metadata, timeout=5)
        except grpc.RpcError as error:
            raise refusal(error) from error

    async def check(self, code: str, client_ip: str) -> pb.CheckCodeResponse:
        return await self._call(self._stub.CheckCode, pb.CheckCodeRequest(code=code, client_ip=client_ip))

    async def reserve(self, code: str, email: str, client_ip: str, request_id: str) -> pb.Reservation:
        ttl = Duration()
        ttl.FromTimedelta(timedelta(minutes=15))
        request = pb.ReserveRequest(code=code, email=email, client_ip=client_ip, ttl=ttl, request_id=request_id)
        return (await self._call(self._stub.Reserve, request)).reservation

    async def redeem(self, reservation_id: str, invitee_id: str, client_ip: str, request_id: str) -> pb.Invitation:
        request = pb.RedeemRequest(reservation_id=reservation_id, invitee_id=invitee_id,
                                   client_ip=client_ip, request_id=request_id)
        return (await self._call(self._stub.Redeem, request)).invitation


async def consume_redeemed(js, durable: str, handle) -> None:
    """Hands each `redeemed` event to handle(event_id, Redeemed) once, and acks
    it after; returns when handle returns True. Delivery is at least once:
    a real consumer remembers the ids it handled (here, for this run)."""
    subscription = await js.pull_subscribe("invitations.v1.redeemed", durable=durable, stream="INVITATIONS")
    handled = set()
    while True:
        try:
            messages = await subscription.fetch(10, timeout=5)
        except nats.errors.TimeoutError:
            continue
        for message in messages:
            event = events_pb2.InvitationEvent.FromString(message.data)
            done = False
            if event.id not in handled:
                done = handle(event.id, event.redeemed)
                handled.add(event.id)
            await message.ack()
            if done:
                return


def expect(condition: bool, what: str) -> None:
    print(("ok   " if condition else "FAIL ") + what)
    if not condition:
        sys.exit(1)


def mistyped(code: str) -> str:
    """The code with its last symbol changed (a typo the check symbol catches)."""
    return code[:-1] + ("A" if code[-1] != "A" else "B")


async def demo(args) -> None:
    ip = args.client_ip
    async with grpc.aio.insecure_channel(args.target, options=[("grpc.service_config", RETRY_UNAVAILABLE)]) as channel:
        invitations = Invitations(channel, os.environ.get("INVITATIONS_TOKEN"))

        # The form checks what the user typed before asking for anything else.
        check = await invitations.check(mistyped(args.code), ip)
        expect(not check.redeemable and check.reason == "CODE_CHECKSUM_MISMATCH",
               f"a typo: the form says {USER_MESSAGES.get(check.reason)!r}")
        check = await invitations.check(args.code, ip)
        expect(check.redeemable, f"CheckCode: redeemable, from {check.inviter_id!r}")

        reservation = await invitations.reserve(args.code, args.email, ip, request_id=str(uuid.uuid4()))
        expect(reservation.state == pb.Reservation.HELD, "Reserve holds a use while the user fills in the form")

        # The request id is made once per sign-up and kept with it, so a
        # retry after a lost answer gets the first answer back.
        request_id = str(uuid.uuid4())
        invitation = await invitations.redeem(reservation.id, args.invitee, ip, request_id)
        retried = await invitations.redeem(reservation.id, args.invitee, ip, request_id)
        expect(invitation.invitee_id == args.invitee and retried.id == invitation.id,
               f"Redeem: {args.invitee} joined, invited by {invitation.inviter_id}; the retry got the same answer")

        try:
            await invitations.reserve(args.code, args.email, ip, request_id=str(uuid.uuid4()))
            expect(False, "the spent code is refused")
        except Refused as refused:
            expect(refused.reason == "ALREADY_REDEEMED", f"the spent code: the form says {str(refused)!r}")

        # Someone elsewhere guessing reservation ids: each is a failed
        # attempt, and past the service's limit it says when to come back
        # (RetryInfo), for an hour by default.
        for _ in range(20):
            try:
                await invitations.redeem(str(uuid.uuid4()), "py-guesser", "192.0.2.66", str(uuid.uuid4()))
            except Refused as refused:
                expect(refused.reason == "TOO_MANY_ATTEMPTS" and refused.retry_after is not None,
                       f"guessing: throttled, retry after {refused.retry_after}")
                break
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.NOT_FOUND:
                    raise
        else:
            expect(False, "guessing is throttled")

    nc = await nats.connect(args.nats)
    try:
        def notify(event_id: str, redeemed: events_pb2.Redeemed) -> bool:
            print(f"     event {event_id}: tell {redeemed.inviter_id or '(unowned)'} that {redeemed.invitee_id} joined")
            return redeemed.invitee_id == args.invitee and redeemed.via_reservation

        await asyncio.wait_for(consume_redeemed(nc.jetstream(), args.durable, notify), timeout=30)
        expect(True, "the redeemed event arrived from JetStream")
    finally:
        await nc.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="The sign-up flow with CODE, checking each answer.")
    parser.add_argument("code")
    parser.add_argument("--target", default="127.0.0.1:50051")
    parser.add_argument("--nats", default="nats://127.0.0.1:4222")
    parser.add_argument("--invitee", default=f"py-{uuid.uuid4().hex[:8]}")
    parser.add_argument("--email", default="")
    parser.add_argument("--client-ip", default="203.0.113.7")
    parser.add_argument("--durable", default="signup-example-python")
    asyncio.run(demo(parser.parse_args()))
