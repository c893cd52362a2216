"""``bundle device-kit``: the click command over ``builder.kit``, registered on the
``bundle`` group by ``builder.cli``'s explicit list."""

from __future__ import annotations

from pathlib import Path

import click

from edgebundle.builder.cli._common import domain_errors, echo_json, help_epilog, json_option
from edgebundle.builder.kit.assemble import KitOptions, make_kit
from edgebundle.builder.kit.debian.archive import KEYRING, MIRROR
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
              help="The devices' platform: linux/aarch64, linux/x86_64 or linux/armv7l "
              "(Debian trixie's packages: --python 3.13).")
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
@click.option("--cache", type=click.Path(path_type=Path, file_okay=False),
              default=KitOptions.cache, show_default=True,
              help="Where Debian downloads are kept, by sha256 (linux/armv7l).")
@click.option("--debian-mirror", default=MIRROR, show_default=True, metavar="URL",
              help="The Debian archive the linux/armv7l packages come from.")
@click.option("--debian-keyring", type=click.Path(path_type=Path, dir_okay=False),
              default=KEYRING, show_default=True,
              help="The keys the archive's InRelease must be signed with (linux/armv7l).")
@json_option
def device_kit_command(
    platform: str,
    python: str,
    trust: tuple[Path, ...],
    out_dir: Path,
    onnxruntime: str | None,
    wheel: Path | None,
    as_json: bool,
    cache: Path,
    debian_mirror: str,
    debian_keyring: Path,
) -> None:
    """Write an offline installer of the device runtime: wheels for the target, the trust key,
    install.sh and a systemd unit.

    \b
    On the device, with no network:
      tar xzf edgebundle-kit-*.tar.gz && cd edgebundle-kit-*/
      sudo ./install.sh            # --prefix, --store, --no-service: see ./install.sh --help

    --json: {"kit": PATH, "bytes": N, "kit_id": ID, "wheels": [{"name", "version"}, ...],
    "debs": [FILE, ...]}.
    """
    with domain_errors():
        options = KitOptions(
            target=parse_target(platform, python),
            trust=trust,
            out_dir=out_dir,
            onnxruntime=onnxruntime,
            wheel=wheel,
            cache=cache,
            debian_mirror=debian_mirror,
            debian_keyring=debian_keyring,
        )
        kit = make_kit(options)
    size = kit.path.stat().st_size
    if as_json:
        wheels = [{"name": w.name, "version": w.version} for w in kit.wheels]
        echo_json(
            {
                "kit": str(kit.path),
                "bytes": size,
                "kit_id": kit.kit_id,
                "wheels": wheels,
                "debs": list(kit.debs),
            }
        )
        return
    debs = f", {len(kit.debs)} Debian packages" if kit.debs else ""
    click.echo(
        f"wrote {kit.path} ({size / 1e6:.1f} MB, {len(kit.wheels)} wheels{debs}, onnxruntime "
        f"{kit.onnxruntime()}, runtime {kit.kit_id})"
    )
