"""``scaffolding-client``: ask a running Triton Scaffolding server a question.

scaffolding-client ask "QUESTION" --method majority_vote --samples 8
scaffolding-client ask "QUESTION" --protocol http --json
scaffolding-client methods
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from rich.console import Console
from rich.table import Table

from .api import DEFAULT_URLS, ScaffoldingClient, ScaffoldingError

# flags that map onto common method parameters; anything else goes through --param
SHORTCUTS = ("samples", "max_tokens", "temperature", "beam_width", "iterations")


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def method_params(args: argparse.Namespace) -> dict[str, Any]:
    params: dict[str, Any] = json.loads(args.params) if args.params else {}
    for name in SHORTCUTS:
        value = getattr(args, name)
        if value is not None:
            params[name] = value
    for item in args.param:
        if "=" not in item:
            raise SystemExit(f"--param expects NAME=VALUE, got {item!r}")
        name, value = item.split("=", 1)
        params[name] = _parse_value(value)
    return params


def describe_event(event: dict[str, Any]) -> str:
    kind = event.get("kind")
    if kind == "sample":
        tally = ", ".join(
            f"{answer}×{votes}"
            for answer, votes in sorted(event.get("tally", {}).items(), key=lambda kv: -kv[1])
        )
        finished, answer = event.get("finished"), event.get("answer")
        return f"sample {finished} done (answer {answer}); tally: {tally or '-'}"
    if kind == "tokens":
        return f"{event.get('stream')} writes {event.get('text', '')!r}"
    if kind == "tally":
        return "final tally: " + ", ".join(
            f"{g['answer']}×{g['votes']}" for g in event.get("groups", [])
        )
    details = ", ".join(
        f"{k}={v}" for k, v in event.items() if k != "kind" and not isinstance(v, (list, dict))
    )
    return f"{kind}: {details}"


def print_result(console: Console, result, show_text: bool) -> None:
    account = result.account
    console.print(
        f"[bold]answer:[/bold] {result.answer if result.answer is not None else '(none found)'}"
    )
    if show_text:
        console.print("[bold]chosen solution:[/bold]")
        console.print(result.text, markup=False, highlight=False)
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_row("method", str(account.get("method")))
    table.add_row(
        "sub-requests",
        f"{account.get('sub_requests')} ({json.dumps(account.get('sub_requests_by_model', {}))})",
    )
    table.add_row(
        "tokens",
        f"{account.get('prompt_tokens')} prompt + {account.get('output_tokens')} generated"
        f" (counted by: {', '.join(account.get('token_counts_from') or {}) or 'nobody'})",
    )
    table.add_row(
        "wall time",
        f"{account.get('wall_seconds', 0):.2f} s  "
        f"phases: {json.dumps(account.get('phase_seconds', {}))}",
    )
    if "tally" in account:
        table.add_row(
            "tally",
            ", ".join(f"{g['answer']}×{g['votes']}" for g in account["tally"]["groups"]) or "-",
        )
    console.print(table)


def cmd_ask(args: argparse.Namespace) -> int:
    console = Console(stderr=False)
    errors = Console(stderr=True)
    params = method_params(args)
    live = args.protocol == "grpc" and not args.json and not args.quiet
    try:
        with ScaffoldingClient(args.url, args.protocol) as client:
            if live:
                with errors.status(f"{args.method} running ...") as status:

                    def on_event(event: dict) -> None:
                        line = describe_event(event)
                        status.update(line)
                        if args.verbose:
                            errors.log(line)

                    result = client.ask(
                        args.question,
                        args.method,
                        params,
                        seed=args.seed,
                        deadline_s=args.deadline,
                        on_event=on_event,
                    )
            else:
                result = client.ask(
                    args.question, args.method, params, seed=args.seed, deadline_s=args.deadline
                )
    except ScaffoldingError as error:
        errors.print(f"[red]error:[/red] {error}", markup=True, highlight=False)
        return 2
    except KeyboardInterrupt:
        errors.print("cancelled")
        return 130
    except Exception as error:  # connection refused and friends: say what to do, no traceback
        errors.print(
            f"[red]error:[/red] cannot reach the server at "
            f"{args.url or DEFAULT_URLS[args.protocol]} over {args.protocol}: {error}\n"
            "Is it running? Start it with: scaffolding-server"
        )
        return 2
    if args.json:
        print(
            json.dumps(
                {"answer": result.answer, "text": result.text, "account": result.account}, indent=2
            )
        )
    else:
        print_result(console, result, show_text=not args.quiet)
    return 0


def cmd_methods(_args: argparse.Namespace) -> int:
    from scaffolding_backend.controllers import METHODS

    for name, controller in sorted(METHODS.items()):
        doc = (
            ((controller.__module__ and sys.modules[controller.__module__].__doc__) or "")
            .strip()
            .split("\n")[0]
        )
        print(f"{name:20s} {doc}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scaffolding-client", description="Ask a Triton Scaffolding server."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    ask = commands.add_parser("ask", help="answer a question with an inference-time compute method")
    ask.add_argument("question")
    ask.add_argument(
        "--method",
        default="majority_vote",
        help="cot, majority_vote, ... (see: scaffolding-client methods)",
    )
    ask.add_argument(
        "--protocol",
        choices=["grpc", "http"],
        default="grpc",
        help="grpc streams progress live; http uses plain /infer",
    )
    ask.add_argument(
        "--url", help="server address (default localhost:8001 for grpc, localhost:8000 for http)"
    )
    ask.add_argument(
        "--seed", type=int, default=0, help="request seed; the same seed replays the same samples"
    )
    ask.add_argument("--deadline", type=float, help="seconds the server may spend on this request")
    ask.add_argument("--samples", type=int)
    ask.add_argument("--max-tokens", dest="max_tokens", type=int)
    ask.add_argument("--temperature", type=float)
    ask.add_argument("--beam-width", dest="beam_width", type=int)
    ask.add_argument("--iterations", type=int)
    ask.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="any method parameter (repeatable)",
    )
    ask.add_argument("--params", help="method parameters as a JSON object")
    ask.add_argument("--json", action="store_true", help="print the raw result and account as JSON")
    ask.add_argument("--quiet", action="store_true", help="only the answer and the account summary")
    ask.add_argument("--verbose", "-v", action="store_true", help="log every progress event")
    ask.set_defaults(func=cmd_ask)
    methods = commands.add_parser("methods", help="list the methods this installation knows")
    methods.set_defaults(func=cmd_methods)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
