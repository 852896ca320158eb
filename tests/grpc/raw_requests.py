"""Sends requests that no generated stub would send, as raw bytes, and prints what the server
answered for each as one JSON object: {case: {code, reason, domain, metadata}}.

Usage: raw_requests.py HOST:PORT API_KEY
"""

import json
import sys

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

CREATE = "/fiscalbill.collection.v1.CollectionService/CreateAuthorization"

CASES = {
    # Not protobuf at all: a field tag with wire type 7 (there is none).
    "garbage": (CREATE, b"\xff\xff\xff\xff"),
    # unit_appid (field 1, a string) holding bytes that are not UTF-8.
    "invalid_utf8": (CREATE, b"\x0a\x02\xc3\x28"),
    # 100 MiB: far over the limit.
    "too_large": (CREATE, bytes(100 << 20)),
    "unknown_method": ("/fiscalbill.collection.v1.CollectionService/NoSuchMethod", b""),
    "unknown_service": ("/no.such.Service/Method", b""),
}


def main():
    target, key = sys.argv[1], sys.argv[2]
    options = [("grpc.max_send_message_length", -1)]
    answers = {}
    with grpc.insecure_channel(target, options=options) as channel:
        for case, (method, payload) in CASES.items():
            call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
            try:
                call(payload, metadata=[("authorization", f"Bearer {key}")], timeout=30)
                answers[case] = {"code": "OK"}
            except grpc.RpcError as error:
                answer = {"code": error.code().name, "message": error.details()}
                status = rpc_status.from_call(error)
                for detail in status.details if status else []:
                    info = error_details_pb2.ErrorInfo()
                    if detail.Unpack(info):
                        answer.update(reason=info.reason, domain=info.domain, metadata=dict(info.metadata))
                answers[case] = answer
    print(json.dumps(answers, ensure_ascii=False))


if __name__ == "__main__":
    main()
