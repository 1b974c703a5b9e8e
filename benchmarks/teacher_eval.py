"""Score a saved teacher on its held-out side again: per speaker, greedy and beam decoding.

    python benchmarks/teacher_eval.py TEACHER.pt [--decode greedy beam]

The held-out side is rebuilt from the report stored in the teacher file (the
same dataset, split settings and seed), so nothing is trained here. Prints one
line per (speaker, decoding): PER, WER and the WER of the look-up alone.
"""

from __future__ import annotations

import argparse
import dataclasses

from satn.config import from_dict
from satn.store import open_dataset
from satn.teacher_io import load_teacher
from satn.teacher_train import Side, TeacherTrainConfig, prepare_teacher_data, recognise


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("teacher")
    ap.add_argument("--decode", nargs="+", default=["greedy", "beam"])
    args = ap.parse_args()
    teacher = load_teacher(args.teacher)
    report = teacher.meta["report"]
    cfg = from_dict(TeacherTrainConfig, report["config"])
    data, _ = prepare_teacher_data(open_dataset(report["features_uri"]), cfg)
    held = data.heldout
    print(f"held out: {len(held)} utterances, {report['split']}")
    for speaker in [None, *sorted(set(held.speakers))]:
        keep = [i for i, s in enumerate(held.speakers) if speaker in (None, s)]
        side = Side(*([getattr(held, f.name)[i] for i in keep] for f in dataclasses.fields(Side)))
        for decode in args.decode:
            r = recognise(teacher.model, side, teacher.lexicon, decode=decode,
                          beam_width=cfg.beam_width, batch_size=cfg.batch_size)
            print(f"{speaker or 'all':<5} {decode:<6} n={r.n:<4} PER {r.per:.3f} "
                  f"({r.phoneme_errors}/{r.phonemes})  WER {r.wer:.3f} "
                  f"({r.word_errors}/{r.words})  look-up WER {r.lookup_wer:.3f}  "
                  f"ambiguous {r.ambiguous}/{r.groups}  unknown {r.unknown}", flush=True)


if __name__ == "__main__":
    main()
