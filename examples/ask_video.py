"""Ask a question about a video from Python.

    python examples/ask_video.py VIDEO "QUESTION" [MODEL]

MODEL is a checkpoint folder or hub id (default: $VIDEOMINI_MODEL, else ICTNLP/llava-mini-llama-3.1-8b).
"""

import sys

from videomini import VideoMini
from videomini.answer import format_time

video, question = sys.argv[1], sys.argv[2]
vm = VideoMini.from_pretrained(sys.argv[3] if len(sys.argv) > 3 else None)
answer = vm.ask(video, question, on_token=lambda piece: print(piece, end="", flush=True))
print()
print(f"{answer.frames_used} of {answer.frames_total} frames")
for moment in answer.evidence:
    print(f"  {format_time(moment.start_s)}-{format_time(moment.end_s)}  best {format_time(moment.time_s)}"
          f"  score {moment.score:.2f} ({moment.method})")
