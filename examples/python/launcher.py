#!/usr/bin/env python3
"""A pullpass launcher in Python: short-lived registry auth for images,
written as a docker config.json that docker, podman, skopeo and buildah read.

It speaks the pullpass.v1 wire contract through stubs that grpcio-tools
generates from the repository's proto/ directory when it starts (nothing
generated is committed). Per image it reads the google.rpc.Status of the
answer: on success the auth goes into the config; on a failure it reports
the ErrorInfo reason and, when the server attached a RetryInfo (a rate limit
upstream or here), waits that long and asks again, within --max-wait.

    PULLPASS_TOKEN=pp_... python3 launcher.py --endpoint 127.0.0.1:50051 \\
        --workspace workspaces/acme --out config.json ghcr.io/acme/app:1.0

Needs: grpcio, grpcio-tools (pip install grpcio grpcio-tools).
Exit status: 0 when every image got auth, 1 when some did not (the config
then holds the others), 2 on bad usage or when the server cannot be used.
Progress and failures go to stderr; stdout gets one JSON line per image.
"""

import argparse
import base64
import json
import os
import pathlib
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
DEFAULT_PROTO = HERE.parent.parent / "proto"
PROTOS = [
    "pullpass/v1/access_service.proto",
    "pullpass/v1/credential_service.proto",
    "pullpass/v1/registry_auth_service.proto",
    "pullpass/v1/audit_service.proto",
    "google/api/field_behavior.proto",
    "google/rpc/status.proto",
    "google/rpc/error_details.proto",
]
DOCKER_HUB_KEY = "https://index.docker.io/v1/"


def generate_stubs(proto_dir, out_dir):
    """Runs protoc (from grpcio-tools) on the contract into out_dir."""
    from grpc_tools import protoc
    import grpc_tools

    well_known = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{proto_dir}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
    ] + PROTOS
    if protoc.main(args) != 0:
        raise SystemExit(f"launcher: protoc failed on {proto_dir}")
    sys.path.insert(0, str(out_dir))


def config_key(auth):
    """The config.json key runtimes look the auth up by."""
    if auth.gateway_image:
        # GW/<upstream>/repo:tag -> GW/<upstream>/repo (a namespace key).
        name = auth.gateway_image.split("@")[0]
        last = name.rsplit("/", 1)
        if ":" in last[-1]:
            name = name[: name.rindex(":")]
        return name
    if auth.registry in ("registry-1.docker.io", "docker.io", "index.docker.io"):
        return DOCKER_HUB_KEY
    return auth.registry


def entry(auth, pb):
    """The config.json entry of one lease."""
    if auth.kind == pb.AUTH_KIND_UNSPECIFIED:
        raise ValueError("the answer names no auth kind")
    if auth.kind == pb.BEARER:
        return {"registrytoken": auth.token}
    pair = f"{auth.username}:{auth.password}".encode()
    return {"auth": base64.b64encode(pair).decode()}


def status_details(status):
    """(reason, retry_after seconds or None) from a google.rpc.Status."""
    from google.rpc import error_details_pb2

    reason, retry = "", None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason = info.reason
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            retry = info.retry_delay.seconds + info.retry_delay.nanos / 1e9
    return reason, retry


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image references")
    parser.add_argument("--endpoint", default=os.environ.get("PULLPASS_ENDPOINT", "127.0.0.1:50051"),
                        help="pullpassd HOST:PORT (env PULLPASS_ENDPOINT)")
    parser.add_argument("--workspace", required=True, help="workspaces/ID")
    parser.add_argument("--project", default="", help="the project the images are for")
    parser.add_argument("--via-gateway", action="store_true",
                        help="pull through pullpass's gateway (username and password only)")
    parser.add_argument("--out", required=True, help="the docker config.json to write (mode 0600)")
    parser.add_argument("--max-wait", type=float, default=30.0,
                        help="longest total wait for RetryInfo retries, in seconds")
    parser.add_argument("--timeout", type=float, default=30.0, help="deadline of each call, in seconds")
    parser.add_argument("--proto", default=str(DEFAULT_PROTO), help="the pullpass proto/ directory")
    parser.add_argument("--ca", help="CA bundle (PEM) of a TLS server; the endpoint is then TLS")
    args = parser.parse_args(argv)
    token = os.environ.get("PULLPASS_TOKEN", "")
    if not token:
        print("launcher: set PULLPASS_TOKEN to a LAUNCHER access token", file=sys.stderr)
        return 2

    import grpc

    with tempfile.TemporaryDirectory(prefix="pullpass-stubs-") as stubs:
        generate_stubs(args.proto, stubs)
        from pullpass.v1 import credential_service_pb2 as pb
        from pullpass.v1 import registry_auth_service_pb2 as auth_pb
        from pullpass.v1 import registry_auth_service_pb2_grpc as auth_grpc

        if args.ca:
            creds = grpc.ssl_channel_credentials(pathlib.Path(args.ca).read_bytes())
            channel = grpc.secure_channel(args.endpoint, creds)
        else:
            channel = grpc.insecure_channel(args.endpoint)
        service = auth_grpc.RegistryAuthServiceStub(channel)
        metadata = [("authorization", f"Bearer {token}")]

        pending = list(args.images)
        auths, failed = {}, {}
        waited = 0.0
        while pending:
            request = auth_pb.IssueRegistryAuthRequest(
                workspace=args.workspace, project=args.project, images=pending, via_gateway=args.via_gateway)
            try:
                response = service.IssueRegistryAuth(request, metadata=metadata, timeout=args.timeout)
            except grpc.RpcError as error:
                print(f"launcher: {error.code().name}: {error.details()}", file=sys.stderr)
                return 2
            retry, delay = [], 0.0
            for answer in response.auths:
                if answer.status.code == 0:
                    auths[answer.image] = answer
                    failed.pop(answer.image, None)
                    continue
                reason, retry_after = status_details(answer.status)
                failed[answer.image] = {"code": answer.status.code, "reason": reason,
                                        "message": answer.status.message, "retry_after": retry_after}
                if retry_after is not None and waited + retry_after <= args.max_wait:
                    retry.append(answer.image)
                    delay = max(delay, retry_after)
            if not retry:
                break
            print(f"launcher: {len(retry)} image(s) asked to wait {delay:.1f} s; retrying", file=sys.stderr)
            time.sleep(delay)
            waited += delay
            pending = retry

        config = {"auths": {}}
        for image, auth in auths.items():
            config["auths"][config_key(auth)] = entry(auth, pb)
            if auth.gateway_image:
                # Clients that match by host only (the docker CLI).
                config["auths"].setdefault(auth.gateway_image.split("/")[0], entry(auth, pb))
        out = pathlib.Path(args.out)
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(config, handle, indent=2)
            handle.write("\n")

        for image in args.images:
            if image in auths:
                auth = auths[image]
                expires = auth.expire_time.seconds
                pull = auth.gateway_image or auth.normalized_image
                print(json.dumps({"image": image, "ok": True, "pull": pull, "expire_time": expires}))
            else:
                outcome = failed.get(image, {"code": 2, "reason": "", "message": "no answer", "retry_after": None})
                print(json.dumps({"image": image, "ok": False, **outcome}))
                print(f"launcher: {image}: {outcome['message']} ({outcome['reason'] or 'no reason'})",
                      file=sys.stderr)
        return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
