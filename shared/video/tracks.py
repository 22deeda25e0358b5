"""Faces followed through a video: one :class:`Track` per face, its name decided by vote; a video's :class:`TrackSet`.

A track collects *votes*: each time its face is recognised, the model's
:class:`shared.recognition.model.Prediction` for it adds ``(slug or None, confidence)``.
The name shown is the majority of its latest :data:`WINDOW` votes, "unknown" (``None``) being a candidate
like any KOL (:func:`decide`); a KOL needs :data:`MIN_VOTES` votes. A vote that disagrees with
the KOL a track shows (another KOL, or "unknown" with another KOL nearest) takes that name away at
once (:meth:`Track.vote`: the earlier votes are forgotten), so a box that came onto another face never keeps the first face's name; the face
reads "?" until its votes agree again. A KOL is drawn when the votes make it at least :data:`SURE`
likely by the rule's own naming probability (:attr:`Track.likely`, the mean of the latest votes' ``p_same``:
the same line a photo's face is named at); the confidence shown is the mean of the model's calibrated
confidence over those votes (:attr:`Track.confidence`, what a photo shows); an "unknown" under
:data:`SURE` reads "?".

Boxes are ``(top, right, bottom, left)`` in frame pixels; frame indices count from 0.
"""
import collections
from dataclasses import dataclass

import numpy as np

from shared.recognition.report import SURE as SURE_ANSWER

#: Votes a KOL needs before a track shows that name (before that it reads "?" or "unknown"), so one
#: chance match never puts a KOL's name on a stranger ...
MIN_VOTES = 2
#: ... unless one of them is at least this sure (the model's calibrated confidence, what the pages call
#: "sure"): a face the photo route names sure is named on its track from that vote on.
SURE_VOTE = SURE_ANSWER
#: The name, its confidence and its likelihood come from a track's latest this many votes (its recent
#: evidence): a face seen badly at first (turning into view, blurred) is named once its later
#: votes agree, and one that turns away loses a name its latest votes no longer carry.
WINDOW = 3
#: An answer ("unknown" or a KOL) is drawn only when it is at least this likely to be right; else "?".
SURE = 0.5


def decide(votes, current=None, has_current=False, min_votes=MIN_VOTES, sure_vote=SURE_VOTE):
    """The KOL slug a track should show (``None``: "unknown"), given its ``votes``.

    votes: ``[(slug or None, confidence), ...]`` in arrival order.
    current / has_current: the slug shown so far (``None`` is "unknown", so
        ``has_current`` says whether anything was decided at all).
    min_votes: votes a KOL needs to be shown at all, so one chance match never puts
        a KOL's name on a stranger (before that the track reads unknown) ...
    sure_vote: ... unless one of its votes is at least this sure (one answer the photo route
        shows as sure is as much evidence as a photo gets).

    Among "unknown" and the KOLs eligible so, the one with the
    most votes wins (ties: higher summed confidence); the current answer is kept
    unless the winner has strictly more votes than it.
    Returns the slug (``None`` for unknown); ``current`` when there are no votes.
    """
    if not votes:
        return current
    counts = collections.Counter(v[0] for v in votes)
    weight = collections.defaultdict(float)
    for slug, conf in votes:
        weight[slug] += conf
    sure = {slug for slug, conf in votes if conf >= sure_vote}
    eligible = [None] + [k for k in counts if k is not None and (counts[k] >= min_votes or k in sure)]
    leader = max(eligible, key=lambda k: (counts.get(k, 0), weight.get(k, 0.0)))
    if has_current and current in eligible and counts.get(current, 0) >= counts.get(leader, 0):
        return current
    return leader


class Track:
    """One face followed from frame to frame.

    box: float ``(top, right, bottom, left)`` in frame pixels. votes: ``[(slug or
    None, confidence)]``. slug: the KOL's slug shown (``None``: "unknown"), decided by
    the votes; decided: at least one vote has decided ``slug`` (``None`` before that
    too). spans: ``[[first, last], ...]`` frame ranges where it was drawn. embedding: the latest ``(128,)`` embedding of its face (``None`` before
    the first recognition); embeddings: every one computed, in order; voted: the frame
    index of the latest vote (set by the recognition loop; ``None`` before it).
    """

    def __init__(self, track_id, box, index):
        self.id = track_id
        self.box = np.asarray(box, dtype=np.float64)
        self.votes = []
        self.p_same = []  # the votes' P(face is their candidate), aligned with votes
        self.slug = None
        self.decided = False
        self.misses = 0
        self.confirmed = index  # the last frame a detection confirmed the box
        self.points = None
        self.spans = []
        self.born = index
        self.embedding = None
        self.embeddings = []
        self.voted = None  # the frame of the latest vote
        self.crossed = None  # the latest frame its box overlapped another track's (set by the recognition loop)
        self.checked = None  # (box, appearance patch) at the latest vote (set by the recognition loop)
        self.changed = None  # the latest frame its box or appearance moved away from those (shared.video.votes)
        self.answers = []  # [[answer, first, last], ...]: what it showed on the frames drawn (answer: slug or None)
        self.best = None  # (p_same, face crop, box in it, embedding) of its vote with the highest p_same (shared.video.unsure)

    def vote(self, slug, confidence, candidate=None, p_same=None):
        """Add one recognition (the prediction's slug or ``None``) and re-decide :attr:`slug` (:func:`decide`).

        candidate: the KOL nearest to the face (the prediction's ``candidate``; default ``slug``);
        p_same: the prediction's P(the face is the candidate) (default: ``confidence`` for a named vote,
        ``1 - confidence`` for an "unknown").
        A vote that disagrees with the KOL the track shows (another KOL, or "unknown" with another KOL
        nearest) forgets the earlier votes first: the name is lost at once (the face reads "?" or
        "unknown" until its votes agree again). An "unknown" whose nearest KOL is the one shown (a
        face turned away, blurred) is an ordinary vote: the majority decides.
        """
        candidate = slug if candidate is None else candidate
        if self.slug is not None and slug != self.slug and (slug is not None or candidate != self.slug):
            self.votes, self.p_same = [], []
            self.slug, self.decided = None, False
        self.votes.append((slug, float(confidence)))
        if p_same is None:
            p_same = confidence if slug is not None else 1.0 - confidence
        self.p_same.append((candidate, float(p_same)))
        self.slug = decide(self.votes[-WINDOW:], self.slug, self.decided)
        self.decided = True

    def remember(self, embedding):
        """Keep a freshly computed embedding of this track's face."""
        self.embedding = np.asarray(embedding, dtype=np.float64)
        self.embeddings.append(self.embedding)

    @property
    def confidence(self):
        """Probability that the answer shown (:attr:`slug`, or "unknown") is right, in [0, 1] (0.0 without votes).

        Each vote ``(answer, c)`` says the shown answer is right with probability
        ``c`` when ``answer`` is the shown slug and at most ``1 - c`` when it is
        another answer; this is the mean of those over the latest :data:`WINDOW` votes.
        """
        if not self.votes:
            return 0.0
        return float(np.mean([c if s == self.slug else 1.0 - c for s, c in self.votes[-WINDOW:]]))

    @property
    def likely(self):
        """How likely the KOL shown (:attr:`slug`) is this face's person by the rule's naming probability,
        in [0, 1] (0.0 without votes or when "unknown" is shown): the mean over the latest :data:`WINDOW`
        votes of their ``p_same`` when their candidate is the KOL shown, ``1 - p_same`` (at most) when it
        is another."""
        if not self.p_same or self.slug is None:
            return 0.0
        return float(np.mean([p if c == self.slug else 1.0 - p for c, p in self.p_same[-WINDOW:]]))

    def shown(self, index, answer=None):
        """Record that the track was drawn on frame ``index`` showing ``answer`` (a KOL's slug, ``None``: none)."""
        if self.spans and self.spans[-1][1] == index - 1:
            self.spans[-1][1] = index
        else:
            self.spans.append([index, index])
        if self.answers and self.answers[-1][0] == answer and self.answers[-1][2] == index - 1:
            self.answers[-1][2] = index
        else:
            self.answers.append([answer, index, index])

    def spans_of(self, answer):
        """The ``[[first, last], ...]`` frame ranges where the track was drawn showing ``answer``."""
        return [[a, b] for who, a, b in self.answers if who == answer]

    @property
    def frames_shown(self):
        return sum(b - a + 1 for a, b in self.spans)


class TrackSet:
    """The tracks of one video: :attr:`live` (followed now, in the order they started) and :attr:`ended`
    (in the order they ended); :attr:`changes` counts the tracks started and ended so far; ids count from 1."""

    def __init__(self):
        self.live = []
        self.ended = []  # kept for the summary
        self.next_id = 1
        self.changes = 0

    def start(self, box, index):
        """A new track for a face first seen at ``box`` in frame ``index``; returns it."""
        t = Track(self.next_id, box, index)
        self.next_id += 1
        self.changes += 1
        self.live.append(t)
        return t

    def drop(self, tracks):
        """End the ``tracks`` still live, in that order."""
        for t in tracks:
            if t in self.live:
                self.live.remove(t)
                self.ended.append(t)
                self.changes += 1

    def every(self):
        """Every track so far: the ended ones, then the live ones."""
        return self.ended + self.live


def percent(confidence):
    """A confidence in [0, 1] as people read it everywhere in the app: ``"93%"``."""
    return f"{round(100 * float(confidence))}%"


@dataclass
class FaceView:
    """A face as drawn on one frame.

    box: ``(top, right, bottom, left)`` ints; track: the track id; slug: the KOL's slug or
    ``None``; name: its display name or ``None``; confidence: probability the shown
    answer is right (see :attr:`Track.confidence`); known: a KOL is shown (only when
    :attr:`Track.likely` is at least :data:`SURE`); unsure: the votes lean to a KOL that is not
    :data:`SURE` enough to show (``confidence`` is then that KOL's, so it reads "?", never "unknown").
    """

    box: tuple
    track: int
    slug: object
    name: object
    confidence: float
    known: bool
    unsure: bool = False

    def label(self, has_model=True):
        """The text drawn under the box: ``"<name> 93%"``, ``"unknown 80%"``, ``"?"`` (the tool is unsure: a
        KOL not sure enough to show, or "unknown" less than :data:`SURE` likely) or ``"no model"``."""
        if not has_model:
            return "no model"
        if self.unsure or (not self.known and self.confidence < SURE):
            return "?"
        return f"{self.name if self.known else 'unknown'} {percent(self.confidence)}"


def merge_spans(spans, gap=0):
    """Union of inclusive ``[a, b]`` frame ranges, sorted: ``[[a, b], ...]``.

    gap: ranges separated by at most this many missing frames are joined too.
    """
    out = []
    for a, b in sorted(spans):
        if out and a <= out[-1][1] + 1 + gap:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return out
