#!/usr/bin/env python3
"""Runs an encoder at the bitrate braid-edge advises, and restarts it when the advice moves.

braid-edge sends its advice to `bitrate_feed` (one JSON line per UDP datagram, at least every
second). This script listens there and runs COMMAND with {kbps} replaced by the advice (capped
by --max-kbps, floored by --min-kbps), restarting the encoder when the advice falls below the
running bitrate or rises a quarter above it, at most once per --hold seconds (an encoder that
cannot change its bitrate live, such as ffmpeg, restarts; one that can would be told instead).

  follow-bitrate.py --listen 127.0.0.1:5600 --max-kbps 8000 -- \\
      ffmpeg -re -i INPUT -c:v libx264 -b:v {kbps}k -maxrate {kbps}k -bufsize {kbps}k \\
             -f mpegts "srt://INGEST:5001?mode=caller&latency=1200000"
"""

import argparse
import json
import shlex
import socket
import subprocess
import sys
import time


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--listen", default="127.0.0.1:5600", help="where braid-edge's bitrate_feed sends")
    parser.add_argument("--max-kbps", type=int, default=8000, help="the most the encoder is run at")
    parser.add_argument("--min-kbps", type=int, default=500, help="the least the encoder is run at")
    parser.add_argument("--hold", type=float, default=5.0, help="seconds between two restarts, at least")
    parser.add_argument("--video-share", type=float, default=0.85, help="share of the advice for the video")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the encoder, with {kbps}")
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command or not any("{kbps}" in part for part in command):
        parser.error("give the encoder command after --, with {kbps} where its bitrate goes")
    host, port = args.listen.rsplit(":", 1)
    feed = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
    feed.bind((host.strip("[]"), int(port)))
    feed.settimeout(3.0)

    encoder, running_kbps, started = None, None, 0.0
    try:
        while True:
            try:
                advice = json.loads(feed.recv(512))["safe_bitrate_bps"]
            except socket.timeout:
                print("no advice from braid-edge for 3 s; the encoder runs on", file=sys.stderr)
                continue
            except (ValueError, KeyError):
                continue
            kbps = max(args.min_kbps, min(args.max_kbps, int(advice * args.video_share / 1000)))
            due = running_kbps is None or kbps < running_kbps or kbps > running_kbps * 1.25
            if encoder is not None and encoder.poll() is not None:
                due = True
            if due and time.monotonic() - started >= args.hold:
                if encoder is not None and encoder.poll() is None:
                    encoder.terminate()
                    encoder.wait(timeout=10)
                argv = [part.replace("{kbps}", str(kbps)) for part in command]
                print(f"encoder at {kbps} kbit/s: {shlex.join(argv)}", file=sys.stderr)
                encoder = subprocess.Popen(argv)
                running_kbps, started = kbps, time.monotonic()
    except KeyboardInterrupt:
        pass
    finally:
        if encoder is not None and encoder.poll() is None:
            encoder.terminate()


if __name__ == "__main__":
    main()
