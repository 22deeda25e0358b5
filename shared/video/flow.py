"""What moves from one frame to the next, seen on a small copy of each frame.

- **optical flow**: pyramidal Lucas-Kanade on a grey copy whose longest side is
  ``Settings.flow_side``; the median motion of up to 30 feature points inside a face's box
  moves it, the median change of their spread scales it (0.8-1.25x a frame). A track whose
  points are lost keeps its box until the next detection.
- **scene cuts** (:func:`is_cut`): the mean absolute difference (0-255) between the 64x36 grey
  thumbnails of two decoded frames, against the differences between the frames since the
  last cut: a cut when it is above ``Settings.cut_diff``, or above ``Settings.cut_min_diff`` and
  ``Settings.cut_ratio`` times the median of the last ``Settings.cut_window`` differences
  (cuts between two shots of one room change little of the picture, but far more than motion
  within a shot). On the two dev clips (``bench/bench_video.py --cuts``) this finds all 9 cuts of
  ``friends_tux`` and all 29 of ``sweden_promo``, with 3 false alarms on the latter (a whip pan,
  lights coming on); a false alarm only costs a full pass and new tracks.

Boxes are float ``(top, right, bottom, left)`` arrays in frame pixels; a track's points are a
float32 ``(n, 1, 2)`` array of ``(x, y)`` in the grey copy's pixels (``None``: none to follow).
"""
import collections

import cv2
import numpy as np

#: Size ``(width, height)`` of the grey thumbnails compared to find cuts.
CUT_THUMB = (64, 36)


def is_cut(diff, recent, settings):
    """True when a frame whose thumbnail differs by ``diff`` from the previous one starts a new shot.

    recent: the differences between the frames since the last cut (the latest
    ``Settings.cut_window``); empty right after a cut or at the start.
    """
    if diff > settings.cut_diff:
        return True
    if not recent or diff <= settings.cut_min_diff:
        return False
    return diff > settings.cut_ratio * max(float(np.median(recent)), 0.5)


class Flow:
    """The small copies of one video's frames and the motion between them.

    settings: a :class:`shared.video.recognizer.Settings` (``flow_side``, ``cut_diff``).
    """

    def __init__(self, settings):
        self.settings = settings
        self.scale = None  # grey-copy pixels per frame pixel (set at the first frame)
        self.prev_thumb = None  # the thumbnail of the frame decoded last
        self.recent = collections.deque(maxlen=settings.cut_window)  # thumbnail differences since the last cut
        self.prev_grey = None  # the grey copy of the frame drawn last

    def prepare(self, rgb):
        """A decoded frame's grey copy and whether it starts a new scene: ``(grey, cut)``; call in frame order."""
        s = self.settings
        if self.scale is None:
            self.scale = min(1.0, float(s.flow_side) / max(rgb.shape[:2]))
        fs = self.scale
        small = rgb if fs == 1.0 else cv2.resize(rgb, None, fx=fs, fy=fs, interpolation=cv2.INTER_LINEAR)
        grey = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
        thumb = cv2.resize(grey, CUT_THUMB, interpolation=cv2.INTER_AREA).astype(np.float32)
        cut = False
        if self.prev_thumb is not None:
            diff = float(np.abs(thumb - self.prev_thumb).mean())
            cut = is_cut(diff, self.recent, s)
            if cut:
                self.recent.clear()
            else:
                self.recent.append(diff)
        self.prev_thumb = thumb
        return grey, cut

    def seed(self, t, grey):
        """Pick up to 30 corners inside the middle of ``t``'s box (the grey copy's pixels) for :meth:`follow`.

        Only a window around the box is searched (a masked whole image would cost about
        as much for each face as for the frame).
        """
        fs = self.scale
        top, right, bottom, left = (t.box * fs).astype(int)
        h, w = bottom - top, right - left
        gh, gw = grey.shape
        y0, y1 = max(0, top + h // 6), min(gh, max(0, bottom - h // 6))
        x0, x1 = max(0, left + w // 6), min(gw, max(0, right - w // 6))
        t.points = None
        if y1 - y0 < 2 or x1 - x0 < 2:
            return
        pad = 2  # corners need their neighbours: search a slightly larger window, keep the inside
        wy0, wx0 = max(0, y0 - pad), max(0, x0 - pad)
        window = grey[wy0:y1 + pad, wx0:x1 + pad]
        mask = np.zeros(window.shape, np.uint8)
        mask[y0 - wy0:y1 - wy0, x0 - wx0:x1 - wx0] = 255
        pts = cv2.goodFeaturesToTrack(window, maxCorners=30, qualityLevel=0.01, minDistance=3, mask=mask)
        if pts is not None and len(pts) >= 3:
            t.points = pts + np.array([wx0, wy0], np.float32)

    def follow(self, tracks, grey):
        """Move and scale the boxes of ``tracks`` from the frame drawn last to the one of ``grey``."""
        with_pts = [t for t in tracks if t.points is not None]
        if self.prev_grey is None or not with_pts:
            return
        allp = np.concatenate([t.points for t in with_pts]).astype(np.float32)
        nxt, status, _err = cv2.calcOpticalFlowPyrLK(self.prev_grey, grey, allp, None,
                                                    winSize=(15, 15), maxLevel=2)
        status = status.ravel().astype(bool)
        fs = self.scale
        start = 0
        for t in with_pts:
            n = len(t.points)
            old, new, ok = allp[start:start + n, 0], nxt[start:start + n, 0], status[start:start + n]
            start += n
            if ok.sum() < max(3, n // 3):
                t.points = None  # lost the texture: hold the box until the next detection
                continue
            old, new = old[ok], new[ok]
            shift = np.median(new - old, axis=0) / fs
            c_old, c_new = old.mean(axis=0), new.mean(axis=0)
            d_old = np.linalg.norm(old - c_old, axis=1)
            d_new = np.linalg.norm(new - c_new, axis=1)
            valid = d_old > 1e-3
            scale = float(np.clip(np.median(d_new[valid] / d_old[valid]), 0.8, 1.25)) if valid.sum() >= 3 else 1.0
            top, right, bottom, left = t.box
            cy, cx = (top + bottom) / 2 + shift[1], (left + right) / 2 + shift[0]
            hh, hw = (bottom - top) / 2 * scale, (right - left) / 2 * scale
            t.box = np.array([cy - hh, cx + hw, cy + hh, cx - hw])
            t.points = new.reshape(-1, 1, 2)

    def patch(self, box, grey):
        """How the face in ``box`` looks on the grey copy ``grey``: its middle as a 16x16 patch scaled to
        zero mean and unit variance (``float32``; the mean of two patches' product is their
        correlation), or ``None`` for a box too small or outside the frame."""
        fs = self.scale
        top, right, bottom, left = (np.asarray(box, dtype=np.float64) * fs).astype(int)
        h, w = bottom - top, right - left
        y0, y1 = max(0, top + h // 6), min(grey.shape[0], bottom - h // 6)
        x0, x1 = max(0, left + w // 6), min(grey.shape[1], right - w // 6)
        if y1 - y0 < 4 or x1 - x0 < 4:
            return None
        p = cv2.resize(grey[y0:y1, x0:x1], (16, 16), interpolation=cv2.INTER_AREA).astype(np.float32)
        sd = float(p.std())
        return (p - p.mean()) / sd if sd > 1.0 else None

    def drawn(self, grey):
        """The frame of ``grey`` was drawn: the next :meth:`follow` starts from it."""
        self.prev_grey = grey
