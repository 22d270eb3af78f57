"""Make the bundled example video: 19 s of 640x360 with spoken sentences (espeak-ng) and on-screen captions at
known times — the same generator the tests use, so every fact in it is known:

    speech  2 s "The weather today is sunny and warm."      text  5-8 s   "OPEN 24 HOURS"
    speech  9 s "Please remember to feed the cat ..."        text 12-14 s  "EXIT ONLY"
    speech 15 s "The train to London departs at noon."

    python examples/make_example.py [examples/example.mp4]
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from narrated import make_narrated_video  # noqa: E402

target = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).with_name("example.mp4"))
if not target.exists():
    made = make_narrated_video(target)
    print(f"wrote {made.path} ({made.duration_s:.0f} s, narrated, captioned)")
