"""``bundle device-kit``: the click command, registered on the ``bundle`` group by
``builder.cli``'s explicit list."""

from __future__ import annotations

from pathlib import Path

import click

from edgebundle.builder.cli._common import echo_json, help_epilog, json_option
from edgebundle.builder.kit.assemble import KitOptions, make_kit
from edgebundle.builder.kit.errors import KitError
from edgebundle.builder.kit.target import PYTHONS, parse_target


@click.command(
    name="device-kit",
    epilog=help_epilog(
        [
            "bundle device-kit --platform linux/aarch64 --python 3.11 "
            "--trust keys/signing.pub --out kit/",
            "scp kit/edgebundle-kit-*.tar.gz device:",
        ]
    ),
)
@click.option("--platform", "platform", required=True, metavar="linux/MACHINE",
              help="The devices' platform: linux/aarch64 or linux/x86_64.")
@click.option("--python", "python", required=True, metavar="X.Y",
              help=f"The devices' CPython: {', '.join(PYTHONS)}.")
@click.option("--trust", type=click.Path(path_type=Path, dir_okay=False, exists=True),
              multiple=True, required=True,
              help="Public key a new store trusts (repeatable), or one channel key statement "
              "(keys/N.json).")
@click.option("--out", "out_dir", type=click.Path(path_type=Path, file_okay=False),
              required=True, help="Directory for the kit's .tar.gz.")
@click.option("--onnxruntime", metavar="VERSION",
              help="Pin onnxruntime, e.g. 1.27.0: the newest that runs under qemu-user 7.2.")
@click.option("--wheel", type=click.Path(path_type=Path, dir_okay=False, exists=True),
              help="A built edgebundle wheel (default: build one from the source checkout).")
@json_option
def device_kit_command(
    platform: str,
    python: str,
    trust: tuple[Path, ...],
    out_dir: Path,
    onnxruntime: str | None,
    wheel: Path | None,
    as_json: bool,
) -> None:
    """Write an offline installer of the device runtime: wheels for the target, the trust key,
    install.sh and a systemd unit.

    \b
    On the device, with no network:
      tar xzf edgebundle-kit-*.tar.gz && cd edgebundle-kit-*/
      sudo ./install.sh            # --prefix, --store, --no-service: see ./install.sh --help

    --json: {"kit": PATH, "bytes": N, "kit_id": ID, "wheels": [{"name", "version"}, ...]}.
    """
    try:
        options = KitOptions(
            target=parse_target(platform, python),
            trust=trust,
            out_dir=out_dir,
            onnxruntime=onnxruntime,
            wheel=wheel,
        )
        kit = make_kit(options)
    except KitError as e:
        raise click.ClickException(str(e)) from None
    size = kit.path.stat().st_size
    if as_json:
        wheels = [{"name": w.name, "version": w.version} for w in kit.wheels]
        echo_json({"kit": str(kit.path), "bytes": size, "kit_id": kit.kit_id, "wheels": wheels})
        return
    click.echo(
        f"wrote {kit.path} ({size / 1e6:.1f} MB, {len(kit.wheels)} wheels, onnxruntime "
        f"{kit.version_of('onnxruntime')}, runtime {kit.kit_id})"
    )
