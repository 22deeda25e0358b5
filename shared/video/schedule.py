"""Which frames of a video get which detection pass: the schedule of full, discovery and region passes.

- a **full pass** comes on the first frame, on every scene cut, and on a schedule: as often as
  ``Settings.full_pixels_per_s`` allows (every 0.5-3 s: about 1 s at 720p, 2.3 s at 1080p),
  less often while the scene stays the same: after a scheduled pass that found no new face, the
  next one comes ``Settings.full_backoff`` times later (at most 3 s), until a track starts or
  ends (:meth:`Schedule.full_gap`);
- in between, a **discovery pass** (whole frame, coarse, embedding only the faces no track
  follows) comes within
  ``Settings.discover_pixels_per_s`` (about every 0.65 s at 720p, 1.5 s at 1080p);
- every ``Settings.detect_every`` frames after the latest full pass, a **region pass** looks
  around the tracks that are not stable (:func:`stable`); it is sent ``Settings.plan_ahead``
  frames before its frame is drawn.

Full and discovery passes are sent when their frame is decoded (:meth:`Schedule.prepare`),
region passes after a frame is drawn (:meth:`Schedule.plan`); every decision reads only what the
loop has applied up to the frame drawn last, so the schedule does not depend on timing.
``settings`` is a :class:`shared.video.recognizer.Settings`; frame indices count from 0.
"""
from dataclasses import dataclass

import numpy as np

from shared.video.passes import HOG_MIN_PX, FullPass, RegionPass, full_scale


@dataclass
class Prepared:
    """What :meth:`Schedule.prepare` knows of a decoded frame before it is drawn."""

    grey: np.ndarray  # its small grey copy (shared.video.flow.Flow.prepare)
    cut: bool  # it starts a new scene
    full: object  # a FullPass or None
    discover: object = None  # a discovery FullPass (coarse, no embeddings) or None
    scheduled: bool = False  # the full pass is a scheduled one (not the first frame's, not a cut's)


def stable(t, index, settings, settled):
    """Track ``t`` needs no region pass at frame ``index``: ``settled(t)``, followed by optical flow,
    and confirmed by a detection less than twice ``Settings.detect_every`` frames before."""
    return settled(t) and t.points is not None and index - t.confirmed < 2 * settings.detect_every


class Schedule:
    """The passes of one video: when each comes, the region passes still to apply, counts of each kind.

    executor: something with ``submit(fn, *args)`` (the worker processes) or ``None`` to run the
    passes inline. fps: the video's frame rate (the schedule is set in seconds).
    """

    def __init__(self, settings, fps, executor=None):
        self.settings = settings
        self.fps = fps
        self.executor = executor
        self.full_every = None  # frames between two scheduled full passes (set at the first frame)
        self.last_full = None  # the latest frame a full pass was sent for
        self.last_cut = None  # the latest scene cut scheduled (frame index)
        self.quiet = False  # the last scheduled full pass found no new face, and no track started or ended since
        self.discover_every = None  # frames between two discovery passes (set at the first frame)
        self.discover_scale = None  # the factor a discovery pass resizes a frame by (None: no discovery passes)
        self.last_discover = None
        self.anchor = 0  # the latest frame a full pass was applied to: region passes count from it
        self.regions = {}  # frame index -> (RegionPass, [tracks])
        self.full_passes = 0
        self.discover_passes = 0
        self.region_passes = 0

    # -- as frames are decoded, ahead of drawing ------------------------------------
    def prepare(self, index, rgb, grey, cut, known, followed=list):
        """Send the full or discovery pass of decoded frame ``index`` if one is due; call in frame order.

        grey, cut: the frame's grey copy and whether it starts a new scene. known: a function
        giving the frame-pixel boxes a full pass of this frame need not embed again (called only
        when one is due); followed: one giving the boxes of every track followed (a discovery pass
        embeds only the faces away from them). Returns a :class:`Prepared` for the loop's step.
        """
        s = self.settings
        full = None
        if self.full_every is None:
            pixels = rgb.shape[0] * rgb.shape[1] * full_scale(rgb.shape, s) ** 2
            every_s = float(np.clip(pixels / s.full_pixels_per_s, *s.full_every_s))
            self.full_every = max(1, int(round(every_s * self.fps)))
        if cut:
            self.last_cut = index
        scheduled = self.last_full is not None and not cut and index - self.last_full >= self.full_gap()
        if self.last_full is None or cut or scheduled:
            self.last_full = index
            full = FullPass(self.executor, rgb, s, known=known())
            self.full_passes += 1
        discover = None
        if self.discover_every is None:
            ds = min(1.0, HOG_MIN_PX / float(s.discover_face_px))
            pixels = rgb.shape[0] * rgb.shape[1] * ds * ds
            self.discover_scale = ds if ds < 0.8 * full_scale(rgb.shape, s) else None
            every_s = pixels / s.discover_pixels_per_s
            self.discover_every = max(s.detect_every, int(round(every_s * self.fps)))
            self.last_discover = index
        if full is not None:
            self.last_discover = index
        elif self.discover_scale and index - self.last_discover >= self.discover_every:
            self.last_discover = index
            discover = FullPass(self.executor, rgb, s, scale=self.discover_scale, tiles=1, known=followed())
            self.discover_passes += 1
        return Prepared(grey, cut, full, discover, scheduled)

    def full_gap(self):
        """Frames from one full pass to the next scheduled one: :attr:`full_every`, or
        ``Settings.full_backoff`` times that (at most ``Settings.full_every_s``'s upper
        bound) while the scene is :attr:`quiet`: its last scheduled pass found no face the tracks
        did not already follow, and no track started or ended since. A small face coming into a
        quiet scene is found up to that much later (faces from ``Settings.discover_face_px``
        up are found by the discovery passes in between).

        :meth:`prepare` decides from what the loop has applied (``Settings.lookahead``
        frames behind), so the schedule does not depend on timing.
        """
        if not self.quiet:
            return self.full_every
        longest = max(self.full_every, int(round(self.settings.full_every_s[1] * self.fps)))
        return int(min(longest, self.full_every * self.settings.full_backoff))

    def cut_ahead(self, drawn):
        """True when a scene cut was scheduled for a frame not yet drawn (``drawn``: frames drawn so far)."""
        return self.last_cut is not None and self.last_cut >= drawn

    # -- after a frame is drawn ------------------------------------------------------
    def plan(self, index, upcoming, tracks, settled):
        """After drawing frame ``index``: send the region pass of a frame a few frames ahead, if one is due.

        upcoming: ``[(index, rgb, Prepared)]`` of the decoded frames after ``index``, in order.
        tracks: the tracks followed now; settled: ``settled(track)``, true when more votes would
        not change its name (its face is then found but not embedded again).
        """
        s = self.settings
        if not tracks or self.last_full is None:
            return
        target = index + s.plan_ahead
        for j, rgb, prep in upcoming:
            if prep.full is not None and j <= target:
                return  # a full pass comes first
            if j == target:
                break
        else:
            return  # the video ends before
        if (target - self.anchor) % s.detect_every or target in self.regions:
            return
        alive = [t for t in tracks if not stable(t, target, s, settled)]
        if not alive:
            return
        flags = [not settled(t) for t in alive]
        self.regions[target] = (RegionPass(self.executor, rgb, [t.box for t in alive], flags, s), alive)
        self.region_passes += 1

    # -- as a frame is drawn ------------------------------------------------------------
    def full_applied(self, index):
        """A full pass was applied to frame ``index``: region passes count from here; those up to it are cancelled."""
        self.anchor = index
        for j in [j for j in self.regions if j <= index]:
            self.regions.pop(j)[0].cancel()

    def take_region(self, index):
        """The ``(RegionPass, [tracks])`` sent for frame ``index``, or ``None``."""
        return self.regions.pop(index, None)

    def drawn(self, prepared, changed):
        """Frame ``prepared`` was drawn; ``changed``: a track started or ended on it. Updates :attr:`quiet`."""
        if prepared.full is not None:  # a scheduled pass that started and ended nothing: the scene is quiet
            self.quiet = prepared.scheduled and not changed
        elif changed:
            self.quiet = False

    def cancel(self):
        """Cancel the region passes still waiting (the stream stopped early)."""
        for rp, _ in self.regions.values():
            rp.cancel()
        self.regions = {}
