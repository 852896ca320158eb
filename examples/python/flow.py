"""One full flow against collection-svc with stubs generated from the .proto files:
CreateAuthorization, WatchAuthorizations for the order, the payer authorizes in the WeChat
sandbox, the stream tells when the bill is issued; then an invalid request, and how its
google.rpc error details read."""

import argparse
import json
import sys
import time
import urllib.request

import generate

sys.path.insert(0, str(generate.generate()))

import grpc  # noqa: E402
from google.protobuf import timestamp_pb2  # noqa: E402
from google.rpc import error_details_pb2  # noqa: E402
from grpc_status import rpc_status  # noqa: E402

from fiscalbill.collection.v1 import collection_pb2, collection_pb2_grpc  # noqa: E402
from fiscalbill.type.v1 import bill_pb2  # noqa: E402

UNIT = "wxc0000000000000c1"


def channel(address: str, ca_file: str | None) -> grpc.Channel:
    if ca_file:
        with open(ca_file, "rb") as f:
            return grpc.secure_channel(address, grpc.ssl_channel_credentials(root_certificates=f.read()))
    return grpc.insecure_channel(address)


def authorize_in_sandbox(sandbox: str, auth_url: str) -> None:
    """The payer presses Authorize on the page behind auth_url (the sandbox's control API)."""
    body = json.dumps({"auth_url": auth_url, "wait": True}).encode()
    request = urllib.request.Request(f"{sandbox}/sandbox/authorize", data=body, headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        push = json.load(response)["push"]
    print(f"payer authorized; WeChat's push was answered {push['attempts'][0]['outcome']}")


def error_details(error: grpc.RpcError) -> tuple[str, list[str]]:
    """The ErrorInfo reason and the BadRequest field names of a failed call."""
    status = rpc_status.from_call(error)
    reason, fields = "", []
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason = info.reason
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields = [violation.field for violation in bad.field_violations]
    return reason, fields


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--collection", default="127.0.0.1:50051")
    parser.add_argument("--sandbox", default="http://127.0.0.1:8900")
    parser.add_argument("--order-id", default=f"py-{int(time.time())}")
    parser.add_argument("--api-key")
    parser.add_argument("--ca-file")
    args = parser.parse_args()
    metadata = [("authorization", f"Bearer {args.api_key}")] if args.api_key else []
    stub = collection_pb2_grpc.CollectionServiceStub(channel(args.collection, args.ca_file))

    fee = 2300
    bill = bill_pb2.BillContent(
        fee=fee,
        payer_title="李四",
        billing_no="44010125",
        billing_code=f"{int(time.time() * 1000) % 10_000_000_000:010d}",
        billing_time=timestamp_pb2.Timestamp(seconds=int(time.time())),
        items=[bill_pb2.BillItem(name="门诊诊查费", quantity="1", unit="次", unit_price=fee, amount=fee)],
    )
    created = stub.CreateAuthorization(
        collection_pb2.CreateAuthorizationRequest(
            unit_appid=UNIT, order_id=args.order_id, money=fee, source=bill_pb2.SOURCE_WEB, bill=bill
        ),
        metadata=metadata,
        timeout=10,
    ).authorization
    print(f"order {created.order_id}: {collection_pb2.AuthorizationState.Name(created.state)}, auth_url {created.auth_url}")

    # Watch the order before the payer acts: the first message says the watch is in place,
    # then each change of state arrives as it commits (no polling).
    watch = stub.WatchAuthorizations(
        collection_pb2.WatchAuthorizationsRequest(unit_appid=UNIT, order_ids=[args.order_id]),
        metadata=metadata,
        timeout=30,
    )
    first = next(watch)
    print(f"watching from resume token {first.resume_token}")
    authorize_in_sandbox(args.sandbox, created.auth_url)
    for message in watch:
        change = message.change
        print(f"order {change.order_id}: {collection_pb2.AuthorizationState.Name(change.state)}")
        if change.state == collection_pb2.AUTHORIZATION_STATE_ISSUED:
            print(f"bill issued: card_id {change.card_id}, card code {change.card_code}")
            watch.cancel()
            break
        if change.state == collection_pb2.AUTHORIZATION_STATE_ISSUE_FAILED:
            print(f"not issued: {change.failure}", file=sys.stderr)
            return 1

    try:
        stub.CreateAuthorization(
            collection_pb2.CreateAuthorizationRequest(unit_appid="nope", order_id="", money=0), metadata=metadata, timeout=10
        )
        print("an invalid request was accepted", file=sys.stderr)
        return 1
    except grpc.RpcError as error:
        reason, fields = error_details(error)
        print(f"invalid request: {error.code().name}, reason {reason}, fields {', '.join(fields)}")
        expected = {"unit_appid", "order_id", "source", "bill", "money"}
        if error.code() != grpc.StatusCode.INVALID_ARGUMENT or reason != "INVALID_ARGUMENT" or set(fields) != expected:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
