"""When a track's name may change: its votes, the tracks a full pass need not embed, crossings, another face.

- a track is **settled** (:meth:`Voting.settled`) once more votes could not change its name:
  its latest ``Settings.settle_votes`` votes agree, or two do, each at least ``Settings.sure_vote`` sure;
  and a vote since it last crossed another track, since its box or appearance last changed
  (:meth:`Voting.watch`), and within the last ``Settings.verify_s`` seconds (a settled track is
  re-verified on that schedule). Settled tracks are found but not embedded by
  region passes, and a scheduled full pass reuses the embedding of those whose last
  ``Settings.settle_votes`` votes agree, the latest less than ``Settings.reuse_s`` old
  (:meth:`Voting.reusable`);
- **changes** (:meth:`Voting.watch`): a track's box grown, shrunk or moved by a face's size
  since its latest vote, or the face's look (a 16x16 grey patch, :meth:`shared.video.flow.Flow.patch`)
  no longer like it was then, unsettles it, so its next pass embeds it again;
- **crossings** (:meth:`Voting.crossings`): when one face passes in front of another, the hidden
  face's box can be carried onto the face in front. Tracks whose boxes overlap are marked crossed
  and embedded again at the next region pass; a fresh embedding farther than
  ``Settings.same_face`` from the mean of its track's earlier ones is someone else
  (:meth:`Voting.someone_else`);
- **naming** (:meth:`Voting.vote`): all the faces of one frame that have an embedding (fresh, or
  the last one of a track) go to ``model.predict`` in ONE call, so the model may assign identities
  jointly; a fresh embedding's prediction is one vote for its track (:mod:`shared.video.tracks`);
  a vote against the name a track shows takes the name away at once (:meth:`shared.video.tracks.Track.vote`).

``settings`` is a :class:`shared.video.recognizer.Settings`; embeddings are ``(128,)`` arrays;
frame indices count from 0.
"""
import numpy as np

from shared.faces import engine
from shared.faces.boxes import iou_matrix


class Voting:
    """The naming rules of one video's tracks, and how many fresh embeddings voted (:attr:`embeddings`).

    model: a :class:`shared.recognition.model.Model` or ``None`` (nothing is voted on: every
    track is settled). fps: the video's frame rate (``Settings.reuse_s`` is in seconds).
    """

    def __init__(self, model, settings, fps):
        self.model = model
        self.settings = settings
        self.fps = fps
        self.embeddings = 0  # fresh embeddings that voted so far
        self.now = 0  # the frame being drawn (set by the recognition loop)

    def settled(self, t):
        """More votes would not change what track ``t`` shows: its latest ``Settings.settle_votes``
        votes all name what it shows (while they disagree it is embedded again at each pass, and the
        name follows its latest votes, :data:`shared.video.tracks.WINDOW`), or its last two do, each
        at least ``Settings.sure_vote`` sure; and
        it has voted since it last crossed another track (:meth:`crossings`). Without a model
        nothing is voted on: every track is settled.
        """
        s = self.settings
        if self.model is None:
            return True
        if t.crossed is not None and (t.voted is None or t.voted <= t.crossed):
            return False  # crossed another face since its last vote: it may be following the other face now
        if t.changed is not None and (t.voted is None or t.voted <= t.changed):
            return False  # its box or its face changed since its last vote
        if t.voted is not None and self.now - t.voted > s.verify_s * self.fps:
            return False  # due for its scheduled re-verification
        if len(t.votes) >= s.settle_votes and all(v[0] == t.slug for v in t.votes[-s.settle_votes:]):
            return True  # its recent votes agree (mixed ones: it is embedded again, the window moves on)
        last = t.votes[-2:]
        return len(last) == 2 and all(v[0] == t.slug and v[1] >= s.sure_vote for v in last)

    def reusable(self, tracks, index):
        """Boxes of the ``tracks`` whose embedding a full pass of frame ``index`` (not yet drawn) may reuse.

        A track qualifies while its last ``Settings.settle_votes`` votes all name what it shows
        and the latest is at most ``Settings.reuse_s`` before ``index``. The boxes are where the
        tracks were on the last frame drawn. (The loop asks for none when a scene cut comes
        before ``index``: every track ends there.)
        """
        s = self.settings
        if self.model is None:
            return []
        recent = index - s.reuse_s * self.fps
        return [tuple(t.box) for t in tracks
                if t.misses == 0 and self.settled(t) and t.voted is not None and t.voted >= recent
                and all(v[0] == t.slug for v in t.votes[-s.settle_votes:])]

    def crossings(self, tracks, index):
        """Mark the ``tracks`` whose boxes overlap another's by ``Settings.cross_iou`` or more as crossed at ``index``.

        When one face passes in front of another, optical flow or a region pass may carry the
        hidden face's box onto the face in front; a crossed track is not :meth:`settled` until a fresh
        vote, so it is embedded again and :meth:`someone_else` can catch the swap.
        """
        live = [t for t in tracks if t.misses <= 1]
        if len(live) < 2:
            return
        overlap = iou_matrix([t.box for t in live], [t.box for t in live])
        np.fill_diagonal(overlap, 0.0)
        for k in np.flatnonzero((overlap >= self.settings.cross_iou).any(axis=1)):
            live[k].crossed = index

    def watch(self, tracks, index, patch):
        """Mark the ``tracks`` whose box or face changed since their latest vote as changed at ``index``.

        patch: ``patch(box)`` gives the appearance patch of a box on this frame
        (:meth:`shared.video.flow.Flow.patch`). Changed: the box's side is outside
        ``1 / Settings.verify_scale`` .. ``Settings.verify_scale`` times, or its centre more than
        ``Settings.verify_shift`` sides away from, what it was at the vote; or the patches correlate
        less than ``Settings.verify_look``.
        """
        s = self.settings
        for t in tracks:
            if t.checked is None or (t.changed is not None and t.changed >= (t.voted or 0)):
                continue  # not voted yet, or already due
            box, look = t.checked
            side0 = max(1.0, box[2] - box[0])
            side1 = max(1.0, t.box[2] - t.box[0])
            shift = np.hypot((t.box[0] + t.box[2] - box[0] - box[2]) / 2, (t.box[1] + t.box[3] - box[1] - box[3]) / 2)
            changed = not (1 / s.verify_scale <= side1 / side0 <= s.verify_scale) or shift > s.verify_shift * side0
            if not changed and look is not None:
                now = patch(t.box)
                changed = now is not None and float(np.mean(look * now)) < s.verify_look
            if changed:
                t.changed = index

    def someone_else(self, t, embedding):
        """True when a fresh ``embedding`` of track ``t``'s box is another person's face.

        It lies farther than ``Settings.same_face`` (Euclidean; the library's own same-person
        tolerance between photos) from the mean of the track's earlier embeddings. Within one
        shot a face's embeddings stay much closer (under 0.45 on every ``bench_video`` clip; the
        two boxes carried onto another face there measured 0.79 and 0.86).
        """
        return bool(t.embeddings) and \
            engine.distances([np.mean(t.embeddings, axis=0)], embedding)[0] > self.settings.same_face

    def vote(self, fresh, tracks, index, patch=None):
        """Predict every face of frame ``index`` that has an embedding in ONE call; fresh embeddings vote.

        fresh: ``[(track, embedding)]`` computed on this frame; tracks: the tracks followed now
        (those missed more than once are left out); patch: as for :meth:`watch` (``None``: no
        appearance check), kept with each voting track's box for it.
        """
        if self.model is None:
            return
        new = {id(t): v for t, v in fresh}
        rows, voters = [], []
        for t in tracks:
            v = new.get(id(t), t.embedding)
            if v is None or t.misses > 1:
                continue
            rows.append(v)
            voters.append((t, id(t) in new))
        if not rows:
            return
        for (t, is_new), p in zip(voters, self.model.predict(np.array(rows))):
            if is_new:
                t.remember(new[id(t)])
                t.vote(p.slug, p.confidence, p.candidate, p.p_same)
                t.voted = index
                t.checked = (t.box.copy(), patch(t.box) if patch is not None else None)
                self.embeddings += 1
