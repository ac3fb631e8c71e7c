"""A non-Rust client against the real service: mint, list, check, redeem, and
the rich error details (ErrorInfo, BadRequest) as another language sees them."""

import sys
import time

import grpc
from google.rpc import error_details_pb2, status_pb2

from invitations.v1 import invitations_pb2 as pb
from invitations.v1 import invitations_pb2_grpc as rpc

target = sys.argv[1]
channel = grpc.insecure_channel(target)
stub = rpc.InvitationServiceStub(channel)
passed, failed = 0, 0


def check(name, condition):
    global passed, failed
    if condition:
        passed += 1
        print(f"ok   {name}")
    else:
        failed += 1
        print(f"FAIL {name}")


def details(error):
    """ErrorInfo and BadRequest from the grpc-status-details-bin trailer."""
    info, bad = None, None
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            status = status_pb2.Status.FromString(value)
            for any_ in status.details:
                if any_.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                    info = error_details_pb2.ErrorInfo()
                    any_.Unpack(info)
                elif any_.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                    bad = error_details_pb2.BadRequest()
                    any_.Unpack(bad)
    return info, bad


deadline = time.time() + 60
while True:
    try:
        grpc.channel_ready_future(channel).result(timeout=1)
        stub.CheckCode(pb.CheckCodeRequest(code="nonsense"), timeout=2)
        break
    except grpc.RpcError:
        if time.time() > deadline:
            raise
        time.sleep(0.1)

minted = stub.Mint(pb.MintRequest(user_ids=["py-alice"], per_user=2, label="interop"))
check("mint returns two invitations", len(minted.invitations) == 2)
listed = stub.ListForUser(pb.ListForUserRequest(user_id="py-alice", page_size=1))
check("list pages", len(listed.invitations) == 1 and listed.next_page_token != "")
code = minted.invitations[0].code
check("check code", stub.CheckCode(pb.CheckCodeRequest(code=code.lower())).redeemable)
redeemed = stub.Redeem(pb.RedeemRequest(code=code, invitee_id="py-bob")).invitation
check("redeem records the inviter", redeemed.inviter_id == "py-alice" and redeemed.state == pb.Invitation.REDEEMED)

try:
    stub.Redeem(pb.RedeemRequest(code=code, invitee_id="py-carol"))
    check("second redeem refused", False)
except grpc.RpcError as e:
    info, _ = details(e)
    check("second redeem refused", e.code() == grpc.StatusCode.FAILED_PRECONDITION)
    check("ErrorInfo reason ALREADY_REDEEMED", info is not None and info.reason == "ALREADY_REDEEMED"
          and info.domain == "invitations")

try:
    stub.ListForUser(pb.ListForUserRequest(user_id="py-alice", page_size=-1))
    check("negative page size refused", False)
except grpc.RpcError as e:
    _, bad = details(e)
    check("negative page size refused", e.code() == grpc.StatusCode.INVALID_ARGUMENT)
    check("BadRequest names page_size", bad is not None and any(v.field == "page_size" for v in bad.field_violations))

print(f"interop: {passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
