"""An OpenID Shared Signals receiver for tests/ssf.rs, written apart from
Lapse (Python, PyJWT and cryptography): it takes SETs pushed to it (RFC 8935)
and polls for them (RFC 8936), verifies each against the cluster's JWKS
(signature, alg EdDSA, typ secevent+jwt, iss, aud), and appends one JSON
line per SET received, in arrival order, to a file per delivery method.

Usage: ssf_receiver.py --port P --brokers URL,URL,... --issuer ISS --aud AUD
       --push-out FILE --push-auth HEADER [--token T --poll-stream ID --poll-out FILE]
Runs until killed.
"""

import argparse
import json
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt

SET_TYPE = "secevent+jwt"


class Keys:
    """The cluster's JWKS, read from any broker, read again for an unknown kid."""

    def __init__(self, brokers):
        self.brokers = brokers
        self.keys = {}
        self.lock = threading.Lock()

    def refresh(self):
        for base in self.brokers:
            try:
                with urllib.request.urlopen(base + "/.well-known/jwks.json", timeout=5) as r:
                    jwks = json.load(r)
                with self.lock:
                    self.keys = {k["kid"]: jwt.PyJWK(k, algorithm="EdDSA") for k in jwks["keys"]}
                return
            except (OSError, urllib.error.URLError, ValueError):
                continue

    def key(self, kid):
        with self.lock:
            found = self.keys.get(kid)
        if found is None:
            self.refresh()
            with self.lock:
                found = self.keys.get(kid)
        return found


def verify(keys, token, issuer, audience):
    """The SET's claims, or an exception saying why it is refused."""
    header = jwt.get_unverified_header(token)
    if header.get("typ") != SET_TYPE:
        raise ValueError("typ is %r, not %r" % (header.get("typ"), SET_TYPE))
    if header.get("alg") != "EdDSA":
        raise ValueError("alg is %r" % header.get("alg"))
    key = keys.key(header.get("kid"))
    if key is None:
        raise ValueError("unknown kid %r" % header.get("kid"))
    claims = jwt.decode(
        token,
        key=key.key,
        algorithms=["EdDSA"],
        audience=audience,
        issuer=issuer,
        options={"require": ["iss", "iat", "jti", "aud", "events"]},
    )
    if len(claims["events"]) != 1:
        raise ValueError("a SET carries %d events" % len(claims["events"]))
    return claims


def record(out, lock, claims, method):
    (event_type, body), = claims["events"].items()
    line = {
        "method": method,
        "jti": claims["jti"],
        "seq": int(claims["jti"].rsplit("-", 1)[1]),
        "txn": claims.get("txn"),
        "event": event_type,
        "sub_id": claims.get("sub_id"),
        "body": body,
    }
    with lock:
        out.write(json.dumps(line) + "\n")
        out.flush()


def serve_push(args, keys):
    out = open(args.push_out, "a")
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_):
            pass

        def answer(self, code, body=None):
            data = json.dumps(body).encode() if body is not None else b""
            self.send_response(code)
            if body is not None:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self):
            if self.headers.get("Authorization") != args.push_auth:
                return self.answer(401, {"err": "authentication_failed", "description": "bad header"})
            if not self.headers.get("Content-Type", "").startswith("application/secevent+jwt"):
                return self.answer(400, {"err": "invalid_request", "description": "content type"})
            token = self.rfile.read(int(self.headers.get("Content-Length", "0"))).decode()
            try:
                claims = verify(keys, token, args.issuer, args.aud)
            except Exception as error:  # noqa: BLE001 - any failure refuses the SET
                print("push: refused a SET: %s" % error, file=sys.stderr, flush=True)
                return self.answer(400, {"err": "invalid_key", "description": str(error)[:200]})
            record(out, lock, claims, "push")
            self.answer(202)

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.serve_forever()


def poll_forever(args, keys):
    out = open(args.poll_out, "a")
    lock = threading.Lock()
    acks = []
    turn = 0
    while True:
        base = args.brokers[turn % len(args.brokers)]
        body = json.dumps({"ack": acks, "maxEvents": 20, "returnImmediately": False}).encode()
        request = urllib.request.Request(
            base + "/ssf/poll/" + args.poll_stream,
            data=body,
            method="POST",
            headers={"Authorization": "Bearer " + args.token, "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=15) as r:
                answer = json.load(r)
        except (OSError, urllib.error.URLError, ValueError) as error:
            print("poll: %s: %s" % (base, error), file=sys.stderr, flush=True)
            turn += 1
            time.sleep(0.2)
            continue
        # The acknowledgements were committed: they need not be sent again.
        acks = []
        sets = answer.get("sets", {})
        ordered = sorted(sets.items(), key=lambda item: int(item[0].rsplit("-", 1)[1]))
        for jti, token in ordered:
            try:
                claims = verify(keys, token, args.issuer, args.aud)
            except Exception as error:  # noqa: BLE001
                print("poll: refused %s: %s" % (jti, error), file=sys.stderr, flush=True)
                sys.exit(3)
            if claims["jti"] != jti:
                print("poll: %s carries jti %s" % (jti, claims["jti"]), file=sys.stderr, flush=True)
                sys.exit(3)
            record(out, lock, claims, "poll")
            acks.append(jti)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--brokers", required=True)
    parser.add_argument("--issuer", required=True)
    parser.add_argument("--aud", required=True)
    parser.add_argument("--push-out", required=True)
    parser.add_argument("--push-auth", required=True)
    parser.add_argument("--token")
    parser.add_argument("--poll-stream")
    parser.add_argument("--poll-out")
    args = parser.parse_args()
    args.brokers = args.brokers.split(",")
    keys = Keys(args.brokers)
    keys.refresh()
    if args.poll_stream:
        threading.Thread(target=poll_forever, args=(args, keys), daemon=True).start()
    serve_push(args, keys)


if __name__ == "__main__":
    main()
