"""Which packages a kit carries: the dependency closure of what the runtime needs, minus a
minimal system (what ``debootstrap --variant=minbase`` installs: the Essential and
Priority: required packages with their own dependencies), in an order dpkg can install: steps,
each one ``dpkg -i`` call."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from edgebundle.builder.kit.debian.packages import Alternatives, Package
from edgebundle.builder.kit.errors import KitError


def minimal_system(index: Mapping[str, Package]) -> frozenset[str]:
    seeds = [p.name for p in index.values() if p.essential or p.priority == "required"]
    return frozenset(closure(index, seeds, frozenset()))


def closure(index: Mapping[str, Package], wanted: Iterable[str], have: frozenset[str]) -> list[str]:
    """``wanted`` and everything they depend on that ``have`` lacks, in the order found."""
    providers = _providers(index)
    chosen: dict[str, None] = {}
    todo = [_real(providers, (name,), "the kit") for name in wanted]
    while todo:
        name = todo.pop(0)
        if name in chosen or name in have:
            continue
        chosen[name] = None
        for group in index[name].depends:
            if not _satisfied(providers, group, have, chosen):
                todo.append(_real(providers, group, name))
    return list(chosen)


def install_order(index: Mapping[str, Package], names: Iterable[str]) -> list[str]:
    """``names`` with each package after those it depends on (cycles broken by name), so that
    ``dpkg -i`` of the list in this order finds every pre-dependency configured."""
    providers = _providers(index)
    pending = sorted(names)
    inside = set(pending)
    done: list[str] = []
    placed: set[str] = set()

    def needs(name: str) -> set[str]:
        found = {p for group in index[name].depends for n in group for p in providers.get(n, ())}
        return (found & inside) - placed - {name}

    while pending:
        ready = [name for name in pending if not needs(name)] or pending[:1]
        for name in ready:
            done.append(name)
            placed.add(name)
            pending.remove(name)
    return done


def install_steps(index: Mapping[str, Package], order: Sequence[str]) -> list[list[str]]:
    """``order`` cut into ``dpkg -i`` calls. One call unpacks all its packages before it
    configures any, so a package whose pre-dependency is in the same call cannot be unpacked:
    it starts the next call. Every other dependency comes earlier in ``order``, so each call
    leaves its packages configured."""
    providers = _providers(index)
    steps: list[list[str]] = [[]]
    for name in order:
        pre = {p for group in index[name].pre_depends for n in group for p in providers.get(n, ())}
        if pre & set(steps[-1]):
            steps.append([])
        steps[-1].append(name)
    return [step for step in steps if step]


def _providers(index: Mapping[str, Package]) -> dict[str, list[str]]:
    """A name to the packages that are it or provide it, the real package first."""
    found: dict[str, list[str]] = {name: [name] for name in index}
    for package in index.values():
        for virtual in package.provides:
            found.setdefault(virtual, []).append(package.name)
    return found


def _satisfied(
    providers: Mapping[str, list[str]], group: Alternatives, have: frozenset[str],
    chosen: Mapping[str, None],
) -> bool:
    return any(p in have or p in chosen for n in group for p in providers.get(n, ()))


def _real(providers: Mapping[str, list[str]], group: Alternatives, wanted_by: str) -> str:
    for name in group:
        if providers.get(name):
            return providers[name][0]
    raise KitError(f"{' | '.join(group)} (needed by {wanted_by}) is not in the Debian index")
