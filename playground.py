"""A margin playground in the browser: train live, move m and s and watch the caps answer, see the
target logit against the angle, and draw a digit to see where it lands.

    python playground.py                      # http://127.0.0.1:8050, ArcFace on mnist-sample, training
    python playground.py --port 8051 --data-dir data

Open the address it prints; the settings live in the page address (?head=arcface&m=0.5&s=15&dim=3,
&controls=off for a lecture). Space plays and pauses. Ctrl-C stops it. In a notebook:
`playground.inline()` shows it in the cell's output.
"""

import socket
import sys

from embedviz.cli import ArgumentParser, int_from


def parse_args(argv=None):
    p = ArgumentParser(prog="playground.py", description=__doc__)
    p.add_argument("--host", default="127.0.0.1",
                   help="the address to listen on; another than 127.0.0.1 lets anyone on that network use it")
    p.add_argument("--port", type=int_from(0, 65535), default=8050, help="the port to listen on; 0: any free one")
    p.add_argument("--data-dir", default="data", help="where the datasets are, as train.py's --data-dir")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="as train.py's")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"), help="as train.py's")
    p.add_argument("--run", metavar="OUT_DIR",
                   help="show the run that train.py wrote (or is writing) in OUT_DIR, at any epoch, instead of training")
    p.add_argument("--model", default="vgg8_arcface", help="with --run: the run's model, as train.py --model")
    return p.parse_args(argv)


def main(argv=None, ready=None):
    """ready(server): called once the server listens (the tests use it to find the port and stop it)."""
    args = parse_args(argv)
    import logging

    from werkzeug.serving import make_server

    from embedviz.playground_page import build_app

    if args.run:
        from embedviz.followed_run import FollowedRun
        from embedviz.run_files import RunFileError

        try:
            live = FollowedRun(args.run, args.model)
        except (OSError, RunFileError) as error:
            raise SystemExit(f"error: {error}") from None
    else:
        live = training(args.data_dir, args.device, args.precision)
    app = build_app(live, follow=bool(args.run))
    try:  # the socket made here, so that a port in use ends in one line (werkzeug would print its own)
        listening = socket.create_server((args.host, args.port), family=socket.AF_INET6 if ":" in args.host
                                         else socket.AF_INET)
    except OSError as error:
        live.close()
        raise SystemExit(f"error: cannot listen on {args.host}:{args.port} ({error.strerror or error}); "
                         "choose another --port") from None
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # not a line for every request
    port = listening.getsockname()[1]
    server = make_server(args.host, port, app.server, threaded=True, fd=listening.fileno())
    print(f"the playground is at http://{args.host}:{port}/ (Ctrl-C stops it)", flush=True)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: listening on {args.host}: anyone who can reach this machine there can use it",
              file=sys.stderr)
    if ready is not None:
        ready(server)
    try:
        server.serve_forever()  # werkzeug's ends quietly on Ctrl-C
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        listening.close()
        live.close()  # the training thread, within its step
    print("stopped", file=sys.stderr)
    return 0


def training(data_dir="data", device="auto", precision="auto"):
    """The preset's run, training in a thread of this process."""
    from embedviz.live import LiveTraining
    from embedviz.playground_page import PRESET, training_settings

    return LiveTraining(training_settings({**PRESET, "device": device, "precision": precision}), data_dir,
                        PRESET["speed"])


def inline(port=8050, data_dir="data", device="auto", precision="auto", height=1100):
    """The playground in a notebook's output (Dash's Jupyter mode), training in the notebook's kernel,
    on 127.0.0.1: returns the training, whose close() stops it; the page goes with the kernel."""
    from embedviz.playground_page import build_app

    live = training(data_dir, device, precision)
    build_app(live).run(jupyter_mode="inline", host="127.0.0.1", port=port, jupyter_height=height)
    return live


def start(argv):
    """The playground served from a thread of this process, as a test or a benchmark runs it:
    (server, thread); server.port is its port, server.shutdown() stops it and its training."""
    import threading
    import time

    servers = []
    thread = threading.Thread(target=main, args=(argv, servers.append), daemon=True)
    thread.start()
    while not servers and thread.is_alive():
        time.sleep(0.05)
    if not servers:
        raise SystemExit("error: the playground did not start")
    return servers[0], thread


if __name__ == "__main__":
    sys.exit(main())
