"""python -m tests.hub_server --port 8765 --storage /tmp/hub"""

import argparse
import logging

from . import HubServer

parser = argparse.ArgumentParser(prog="python -m tests.hub_server", description="Local Hugging Face Hub for tests.")
parser.add_argument("--host", default="127.0.0.1")
parser.add_argument("--port", type=int, default=8765, help="0 picks a free port")
parser.add_argument("--storage", required=True, help="directory for repos and blobs (created if missing)")
parser.add_argument("--drop-lfs-uploads", type=int, default=0, metavar="N",
                    help="cut the connection in the middle of the first N LFS uploads")
parser.add_argument("--reject-lfs-uploads", type=int, default=0, metavar="N",
                    help="answer the first N LFS uploads with 403 (expired upload URL)")
parser.add_argument("--quiet", action="store_true", help="do not log requests")
args = parser.parse_args()

logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(asctime)s %(message)s")
server = HubServer(args.storage, host=args.host, port=args.port)
server.drop_next_lfs_uploads(args.drop_lfs_uploads)
server.reject_next_lfs_uploads(args.reject_lfs_uploads)
print(f"HF_ENDPOINT={server.endpoint}")
print(f"HF_TOKEN={server.token}        # user 'tester'")
print(f"other token: {server.other_token}  # user 'intruder'")
print("HF_HUB_DISABLE_XET=1           # the client must use LFS, not Xet", flush=True)
try:
    server.serve_forever()
except KeyboardInterrupt:
    pass
