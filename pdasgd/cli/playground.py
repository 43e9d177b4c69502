"""`pdasgd playground`: an interactive schedule playground in the browser, served on 127.0.0.1.

Move a knob (method, layers, beta, workers, max_in_flight, delays, jitter, a straggler, batches) and the
page redraws the timeline, one row per worker, with the simulated throughput, speed-up, utilisation and
per-layer staleness (LU beside BU) next to the closed forms and a one-line reading of the regime. A second
view (A/B) shares the time axis. The page's state is its URL; "Download scenario" saves the TOML that
`pdasgd simulate` reads. Every answer comes from the simulator through `/api/simulate` (`pdasgd.playground`).
"""

from __future__ import annotations

import argparse
import threading
import webbrowser

from pdasgd.cli.common import fail, int_between

DEFAULT_PORT = 8765


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "playground",
        help="an interactive schedule playground in the browser",
        description="Serve the schedule playground on 127.0.0.1 and open it in the browser: change the "
        "method, layers, beta, forward and backward workers, max_in_flight, hand-off and visibility delays, "
        "jitter, a straggler or the batches, and watch the timeline, throughput, utilisation and per-layer "
        "staleness change, beside the closed-form theory; compare two settings side by side (A/B). The "
        "page's URL holds its state, so a link reproduces it. Stop with Ctrl-C.",
        epilog="With SCENARIO.toml the page starts from its method, workers and delays, and can use its "
        "per-layer costs ('layer costs: file'); every worker gets its own device. The answers come from "
        "the simulator (GET /api/simulate?backward=2&beta=3 answers JSON; a bad parameter gets HTTP 400 "
        "and a one-line reason).",
    )
    parser.add_argument("scenario", nargs="?", help="scenario TOML file to start from (optional)")
    parser.add_argument(
        "--port",
        type=int_between(0, 65535),
        metavar="N",
        help=f"port on 127.0.0.1 (default {DEFAULT_PORT}, or a free one if that is taken; 0: any free port)",
    )
    parser.add_argument("--no-browser", action="store_true", help="do not open a browser; print the URL")
    parser.add_argument("--verbose", action="store_true", help="log every request")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pdasgd.playground import PlaygroundError, base_from
    from pdasgd.scenario import load_scenario

    try:
        scenario = load_scenario(args.scenario) if args.scenario else None
        base = base_from(scenario, args.scenario or "defaults")
        server = _listen(args.port, base, args.verbose)
    except PlaygroundError as error:
        fail(str(error))
    with server:
        print(f"playground on {server.url}  (Ctrl-C stops it)", flush=True)
        if not args.no_browser:
            threading.Thread(target=_open, args=(server.url,), daemon=True).start()
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            print("playground stopped", flush=True)
    return 0


def _listen(port: int | None, base, verbose: bool):
    """The server on `port`; without --port, the default port or, if it is taken, any free one."""
    from pdasgd.playground import PlaygroundError, start_server

    try:
        return start_server(DEFAULT_PORT if port is None else port, base, verbose)
    except PlaygroundError:
        if port is not None:
            raise
        return start_server(0, base, verbose)


def _open(url: str) -> None:
    if not webbrowser.open(url):
        print(f"no browser found: open {url} yourself", flush=True)
