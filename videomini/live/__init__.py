"""Live video: watch a stream while it plays — two clocks, bounded rolling memory, questions, standing alerts."""

from videomini.live.session import LiveAnswer, LiveSession, NothingSeenYet, Piece, WatchOptions, watch
from videomini.live.sources import SourceError, SourceSpec, parse_source
from videomini.live.timeline import Gap, Timeline, parse_duration

__all__ = ["LiveAnswer", "LiveSession", "NothingSeenYet", "Piece", "WatchOptions", "watch", "SourceError",
           "SourceSpec", "parse_source", "Gap", "Timeline", "parse_duration"]
