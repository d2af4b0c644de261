"""`stylefarm render`, and the demo's job (samples/, demo_params, a local demo_command).

The render options are generated from `shared.spec.RenderParams` (name, help, default,
choices) and their values are validated by `RenderParamsSchema`, so the CLI accepts and
rejects exactly what the API does, in the same words. argparse only splits the words.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from dataclasses import MISSING, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from marshmallow import ValidationError, validate
from marshmallow import fields as mf

from cli.main import Runner, UsageError
from shared.spec import RenderParams, blend_weights, output_size

if TYPE_CHECKING:
    from PIL import Image

    from worker.engine.render import ProgressEvent

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
DEMO_CONTENT = "tubingen.jpg"
DEMO_STYLE = "starry_night.jpg"
DEMO_SIZE = 384


# ------------------------------------------------------------------ options from the spec


def option_name(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


def add_param_options(parser: argparse.ArgumentParser) -> None:
    """One option per RenderParams field. Values stay strings: the schema converts them."""
    group = parser.add_argument_group("render parameters")
    for f in fields(RenderParams):
        schema_field = f.metadata["field"]
        default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
        help_text = f"{f.metadata['help']} (default: {_show(default)})"
        kwargs: dict[str, Any] = {"dest": f"param_{f.name}", "default": argparse.SUPPRESS,
                                  "help": help_text}
        if isinstance(schema_field, mf.List):
            kwargs.update(nargs="+", metavar="N")
        elif isinstance(schema_field, mf.Dict):
            kwargs.update(nargs="+", metavar="LAYER=WEIGHT")
        elif choices := _choices(schema_field):
            kwargs["metavar"] = "|".join(choices)
        else:
            kwargs["metavar"] = f.name.split("_")[-1].upper()
        group.add_argument(option_name(f.name), **kwargs)


def _choices(schema_field: mf.Field) -> list[str]:
    for validator in schema_field.validators:
        if isinstance(validator, validate.OneOf):
            return [str(c) for c in validator.choices]
    return []


def _show(value: Any) -> str:
    if isinstance(value, dict):
        return " ".join(f"{k}={v:g}" for k, v in value.items())
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _number(text: Any) -> Any:
    """A command-line word as the JSON number it spells, else unchanged: the schema takes
    numbers only as numbers (an API client's "48" is refused), and the shell has only words."""
    if not isinstance(text, str):
        return text
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def params_from_args(args: argparse.Namespace, **extra: Any) -> RenderParams:
    """Build RenderParams through the schema; errors name the option as the user typed it."""
    raw: dict[str, Any] = dict(extra)
    for f in fields(RenderParams):
        value = getattr(args, f"param_{f.name}", None)
        if value is None:
            continue
        words = value if isinstance(value, list) else [value]
        if len(words) == 1 and _is_auto(words[0], f.metadata["field"]):
            value = None  # --tile-size auto, --content-layer-weights auto
        elif isinstance(f.metadata["field"], mf.Dict):
            value = _parse_pairs(option_name(f.name), value)
        raw[f.name] = [_number(v) for v in value] if isinstance(value, list) else _number(value)
    try:
        return RenderParams.from_dict(raw)
    except ValidationError as exc:
        raise UsageError(_first_error(exc.messages)) from exc


def _is_auto(value: Any, schema_field: mf.Field) -> bool:
    """"none", or "auto" where None means the worker chooses."""
    return isinstance(value, str) and value.lower() in ("none", "auto") \
        and schema_field.allow_none


def _parse_pairs(option: str, pairs: list[str]) -> dict[str, Any]:
    parsed: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise UsageError(f"{option}: expected LAYER=WEIGHT, got {pair!r}")
        parsed[key] = _number(value)  # "0.3" must reach the schema as 0.3, as from JSON
    return parsed


def _first_error(messages: Any, path: str = "") -> str:
    """The first message of marshmallow's nested error dict, as '--option: message'."""
    if isinstance(messages, dict):
        key, value = next(iter(messages.items()))
        if not path:
            name = key if key != "_schema" else ""
            return _first_error(value, option_name(name) if name else "")
        return _first_error(value, path if isinstance(key, int) else f"{path} {key}")
    if isinstance(messages, list):
        return _first_error(messages[0], path)
    return f"{path}: {messages}" if path else str(messages)


# ------------------------------------------------------------------------- rendering


def render_command(parser: argparse.ArgumentParser) -> Runner:
    """Render CONTENT in the style of STYLE [STYLE ...] into OUTPUT (.png .jpg .webp .tif)."""
    parser.add_argument("content", help="content image")
    parser.add_argument("styles", nargs="+", metavar="style", help="style image(s)")
    parser.add_argument("-o", "--output", required=True, help="output image; format by extension")
    parser.add_argument("--init-image", help="start from this image (implies --init image)")
    _add_run_options(parser)
    add_param_options(parser)

    def run(args: argparse.Namespace) -> int:
        extra = {"init": "image"} if args.init_image and not hasattr(args, "param_init") else {}
        params = params_from_args(args, **extra)
        render_files(Path(args.content), [Path(s) for s in args.styles], Path(args.output),
                     params, args, init_path=Path(args.init_image) if args.init_image else None)
        return 0

    return run


def demo_command(parser: argparse.ArgumentParser) -> Runner:
    """Render the sample job shipped in samples/ (Tübingen in the style of The Starry Night)."""
    parser.add_argument("-o", "--output", default="out/demo.png", help="default: %(default)s")
    _add_run_options(parser)

    def run(args: argparse.Namespace) -> int:
        render_files(SAMPLES / DEMO_CONTENT, [SAMPLES / DEMO_STYLE], Path(args.output),
                     demo_params(), args)
        return 0

    return run


def demo_params() -> RenderParams:
    """The demo's job: the default parameters at a size a laptop CPU renders in minutes."""
    return RenderParams(size=DEMO_SIZE)


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-pixels", type=int, default=None,
                        help="largest input image in pixels (default: STYLEFARM_MAX_INPUT_PIXELS)")
    parser.add_argument("--device", default=None,
                        help="auto, cpu, cuda, cuda:1... (default: STYLEFARM_DEVICE or auto)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def render_files(content_path: Path, style_paths: list[Path], output: Path,
                 params: RenderParams, args: argparse.Namespace,
                 init_path: Path | None = None) -> Path:
    """Check everything that can be checked before the (long) render, render, save."""
    from shared.settings import get_settings
    from worker.engine.images import ImageError, open_image, output_format, save_image

    settings = get_settings()
    max_pixels = args.max_pixels or settings.max_input_pixels
    try:
        output_format(output)
        content = open_image(content_path, max_pixels)
        styles = [open_image(p, max_pixels) for p in style_paths]
        init = open_image(init_path, max_pixels) if init_path else None
    except ImageError as exc:
        raise UsageError(str(exc)) from exc
    if params.init == "image" and init is None:
        raise UsageError("--init: 'image' needs --init-image")
    width, height = output_size(params, *content.size)
    if width * height > settings.max_output_pixels:
        raise UsageError(f"output {width}x{height} is more than the limit of "
                         f"{settings.max_output_pixels} pixels (STYLEFARM_MAX_OUTPUT_PIXELS)")
    if params.style_weights is not None:  # the API's rule: missing entries 1, extra ignored
        params = dataclasses.replace(params, style_weights=blend_weights(
            params.style_weights, [1.0] * len(style_paths)))
    output.parent.mkdir(parents=True, exist_ok=True)

    from worker.engine_adapter import is_out_of_memory

    try:
        image = _render_with_progress(content, styles, init, params, args.device, args.quiet)
    except Exception as exc:
        if not is_out_of_memory(exc):
            raise
        raise UsageError(f"out of memory rendering {width}x{height} on the "
                         f"{args.device or 'default'} device; try a smaller --size") from exc
    metadata = {"params": params.to_dict(), "content": content_path.name,
                "styles": [p.name for p in style_paths]}
    save_image(image, output, metadata)
    if not args.quiet:
        print(f"wrote {output} ({image.width}x{image.height})")
    return output


def _render_with_progress(content: Image.Image, styles: list[Image.Image],
                          init: Image.Image | None, params: RenderParams,
                          device: str | None, quiet: bool) -> Image.Image:
    from tqdm import tqdm

    from worker.engine.render import RenderSpec, render

    spec = RenderSpec(content, styles, params, init)
    if quiet:
        return render(spec, device=device)
    overall = tqdm(total=100, desc="overall", unit="%", position=0,
                   bar_format="{desc:>9}: {percentage:3.0f}%|{bar}| {elapsed}<{remaining}")
    scale_bar: tqdm | None = None
    last_postfix = 0.0

    def on_progress(event: ProgressEvent) -> None:
        nonlocal scale_bar, last_postfix
        if scale_bar is None or event.iteration == 1:
            if scale_bar is not None:
                scale_bar.close()
            desc = f"scale {event.scale + 1}/{event.scales} {event.width}x{event.height}"
            scale_bar = tqdm(total=event.iterations, position=1, leave=False, unit="it", desc=desc)
        scale_bar.update(1)
        overall.n = round(100 * event.fraction, 1)
        now = time.monotonic()
        if now - last_postfix > 1.0 or event.iteration == event.iterations:
            scale_bar.set_postfix(loss=f"{event.loss:.4g}", refresh=False)
            overall.refresh()
            last_postfix = now

    try:
        return render(spec, on_progress=on_progress, device=device)
    finally:
        if scale_bar is not None:
            scale_bar.close()
        overall.close()

