#!/usr/bin/env python3
"""Check that imports between shardgate's top-level modules go one way.

    scripts/check-layers.py [SRC_DIR]      # default: src
    scripts/check-layers.py --self-test    # shows the check can fail

The layer order is the numbered list under "# Layers" in SRC_DIR/lib.rs
(lowest first; several modules may share a layer). Every `crate::NAME`
path (also inside `use crate::{...}` groups, doc links included) in a file
of top-level module M must name a module of a lower layer than M's. Test
code is exempt: files named tests.rs or under a tests/ directory, and what
follows an inline `#[cfg(test)] mod tests {`. Also fails when lib.rs
declares a module the list does not place, or the list names one lib.rs
does not declare. Exit status 1 on any violation, each printed as
`FILE:LINE: M (layer i) imports N (layer j)`.
"""
import os
import re
import sys
import tempfile

LAYER_LINE = re.compile(r"^//!\s*(\d+)\.\s+(.*)$")
PATH = re.compile(r"\bcrate::(\w+)")
GROUP = re.compile(r"\bcrate::\{([^}]*)\}", re.S)
INLINE_TESTS = re.compile(r"#\[cfg\(test\)\]\s*(pub(\(crate\))?\s+)?mod tests\s*\{")


def read_layers(lib_rs):
    """{module: layer number} from the '# Layers' list of lib.rs, and the
    modules lib.rs declares."""
    layers, in_section = {}, False
    declared = set()
    for line in open(lib_rs, encoding="utf-8"):
        line = line.rstrip("\n")
        if line.startswith("//! #"):
            in_section = line.strip() == "//! # Layers"
            continue
        m = LAYER_LINE.match(line)
        if in_section and m:
            # Module names are the backticked words before the first ':'.
            names = m[2].split(":", 1)[0]
            for name in re.findall(r"`(\w+)`", names):
                layers[name] = int(m[1])
        d = re.match(r"^pub mod (\w+);", line)
        if d:
            declared.add(d[1])
    return layers, declared


def test_only(rel):
    parts = rel.split(os.sep)
    return "tests" in parts[:-1] or parts[-1] == "tests.rs"


def imports(text):
    """(line number, module) of every crate:: reference outside test code."""
    cut = INLINE_TESTS.search(text)
    if cut:
        text = text[: cut.start()]
    found = []
    for m in PATH.finditer(text):
        found.append((text.count("\n", 0, m.start()) + 1, m[1]))
    for m in GROUP.finditer(text):
        line = text.count("\n", 0, m.start()) + 1
        for name in re.findall(r"(?:^|,)\s*(\w+)", m[1]):
            found.append((line, name))
    return found


def check(src):
    layers, declared = read_layers(os.path.join(src, "lib.rs"))
    problems = []
    if not layers:
        return [f"{src}/lib.rs: no '# Layers' list (//! 1. `module`: ...)"]
    for name in sorted(declared - set(layers)):
        problems.append(f"{src}/lib.rs: module `{name}` is declared but has no layer")
    for name in sorted(set(layers) - declared):
        problems.append(f"{src}/lib.rs: layer list names `{name}`, which lib.rs does not declare")
    for d, _, files in os.walk(src):
        for f in sorted(files):
            if not f.endswith(".rs"):
                continue
            path = os.path.join(d, f)
            rel = os.path.relpath(path, src)
            if rel in ("lib.rs", "main.rs") or rel.startswith("bin" + os.sep) or test_only(rel):
                continue
            top = rel.split(os.sep)[0].removesuffix(".rs")
            if top not in layers:
                continue  # reported above if lib.rs declares it
            text = open(path, encoding="utf-8").read()
            for line, name in imports(text):
                if name == top or name not in layers:
                    continue  # own module, or e.g. `crate::` of a macro
                if layers[name] >= layers[top]:
                    problems.append(
                        f"{path}:{line}: {top} (layer {layers[top]}) imports {name} (layer {layers[name]})"
                    )
    return problems


def self_test():
    """A tree with one climbing import, one same-layer import, one
    undeclared layer and test code that may climb: exactly the first three
    are reported."""
    with tempfile.TemporaryDirectory() as root:
        src = os.path.join(root, "src")
        os.makedirs(os.path.join(src, "low"))
        files = {
            "lib.rs": "//! # Layers\n//!\n//! 1. `low`, `side`: bottom.\n//! 2. `high`: top.\n\n"
            "pub mod high;\npub mod low;\npub mod side;\npub mod stray;\n",
            "high.rs": "use crate::low::Thing;\n",
            "low/mod.rs": "use crate::{side, high::Up};\n\n#[cfg(test)]\nmod tests {\n    use crate::high::X;\n}\n",
            "low/tests.rs": "use crate::high::Y;\n",
            "side.rs": "//! Own module: crate::side is fine.\n",
            "stray.rs": "",
        }
        for name, text in files.items():
            with open(os.path.join(src, name), "w", encoding="utf-8") as out:
                out.write(text)
        got = check(src)
        want = [
            "module `stray` is declared but has no layer",
            "low (layer 1) imports side (layer 1)",
            "low (layer 1) imports high (layer 2)",
        ]
        ok = len(got) == len(want) and all(any(w in g for g in got) for w in want)
        print("self-test:", "ok" if ok else "FAILED")
        for g in got:
            print("  reported:", g)
        return 0 if ok else 1


def main():
    if sys.argv[1:] == ["--self-test"]:
        return self_test()
    src = sys.argv[1] if len(sys.argv) > 1 else "src"
    problems = check(src)
    for p in problems:
        print(p)
    if problems:
        print(f"{len(problems)} import(s) break the layer order declared in {src}/lib.rs")
        return 1
    print(f"layers ok: every import in {src}/ goes down the order declared in {src}/lib.rs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
