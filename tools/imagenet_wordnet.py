"""Write ``kernelviz/data/imagenet.json``: the ImageNet-1k classes (index, WordNet id, name) and, for each, its
WordNet groups (every hypernym above it, with its name), from WordNet 3.0.

    apt-get install wordnet-base          # WordNet 3.0's data files, in /usr/share/wordnet
    python tools/imagenet_wordnet.py      # [--wordnet /usr/share/wordnet] [--out kernelviz/data/imagenet.json]

The class order is the sorted list of WordNet ids (the class index of torchvision's and timm's ImageNet heads), read
from timm's ``imagenet_synsets.txt``; the class names are torchvision's (the names its ImageNet weights carry). The
groups are WordNet's hypernyms (``@`` and instance ``@i`` pointers of ``data.noun``), followed to the root.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

#: WordNet 3.0's licence, which must go with every copy of its data (the table holds its synsets and names).
LICENCE = """WordNet 3.0 Copyright 2006 by Princeton University. All rights reserved.

This software and database is being provided to you, the LICENSEE, by Princeton University under the following
license. By obtaining, using and/or copying this software and database, you agree that you have read, understood,
and will comply with these terms and conditions.: Permission to use, copy, modify and distribute this software and
database and its documentation for any purpose and without fee or royalty is hereby granted, provided that you agree
to comply with the following copyright notice and statements, including the disclaimer, and that the same appear on
ALL copies of the software, database and documentation, including modifications that you make for internal use or
for distribution. THIS SOFTWARE AND DATABASE IS PROVIDED "AS IS" AND PRINCETON UNIVERSITY MAKES NO REPRESENTATIONS OR
WARRANTIES, EXPRESS OR IMPLIED. BY WAY OF EXAMPLE, BUT NOT LIMITATION, PRINCETON UNIVERSITY MAKES NO REPRESENTATIONS OR
WARRANTIES OF MERCHANT- ABILITY OR FITNESS FOR ANY PARTICULAR PURPOSE OR THAT THE USE OF THE LICENSED SOFTWARE,
DATABASE OR DOCUMENTATION WILL NOT INFRINGE ANY THIRD PARTY PATENTS, COPYRIGHTS, TRADEMARKS OR OTHER RIGHTS. The name of
Princeton University or Princeton may not be used in advertising or publicity pertaining to distribution of the
software and/or database. Title to copyright in this software, database and any associated documentation shall at all
times remain with Princeton University and LICENSEE agrees to preserve same."""


def read_nouns(wordnet: Path) -> dict[str, tuple[str, list[str]]]:
    """``{wnid: (first lemma, hypernym wnids)}`` for every noun synset of ``data.noun``."""
    nouns = {}
    for line in (wordnet / "data.noun").read_text(encoding="latin-1").splitlines():
        if line.startswith("  "):  # the licence header
            continue
        fields = line.split(" | ")[0].split()
        offset, count = fields[0], int(fields[3], 16)
        lemma = fields[4].replace("_", " ")
        at = 4 + 2 * count
        pointers = int(fields[at])
        hypernyms = []
        for p in range(pointers):
            symbol, target, pos = fields[at + 1 + 4 * p : at + 4 + 4 * p]
            if symbol in ("@", "@i") and pos == "n":
                hypernyms.append(f"n{target}")
        nouns[f"n{offset}"] = (lemma, hypernyms)
    return nouns


def ancestors(wnid: str, nouns: dict[str, tuple[str, list[str]]]) -> list[str]:
    """Every hypernym above ``wnid`` (not itself), nearest first, each once."""
    found: list[str] = []
    todo = list(nouns[wnid][1])
    while todo:
        up = todo.pop(0)
        if up not in found:
            found.append(up)
            todo.extend(nouns[up][1])
    return found


def main() -> None:
    import timm
    from torchvision.models._meta import _IMAGENET_CATEGORIES

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--wordnet", type=Path, default=Path("/usr/share/wordnet"))
    parser.add_argument("--out", type=Path, default=Path(__file__).parents[1] / "kernelviz" / "data" / "imagenet.json")
    args = parser.parse_args()
    synsets = (Path(timm.__file__).parent / "data" / "_info" / "imagenet_synsets.txt").read_text().split()
    assert len(synsets) == 1000 and synsets == sorted(synsets), "timm's ImageNet-1k synsets, sorted"
    nouns = read_nouns(args.wordnet)
    groups: dict[str, int] = {}
    classes = []
    for wnid, name in zip(synsets, _IMAGENET_CATEGORIES, strict=True):
        above = [groups.setdefault(up, len(groups)) for up in ancestors(wnid, nouns)]
        classes.append([wnid, name, above])
    table = {
        "about": "The ImageNet-1k classes in their index order (WordNet id, name) and the WordNet 3.0 groups above "
        "each (hypernyms, nearest first); written by tools/imagenet_wordnet.py",
        "licence": LICENCE,
        "classes": classes,
        "groups": [[wnid, nouns[wnid][0]] for wnid in groups],
    }
    args.out.write_text(json.dumps(table, separators=(",", ":")) + "\n", encoding="utf-8")
    print(f"wrote {args.out}: {len(classes)} classes, {len(groups)} groups, {args.out.stat().st_size // 1024} KiB")


if __name__ == "__main__":
    main()
