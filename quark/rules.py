"""Rules: upstream quark's filter DSL, to pass, drop or poison events.

::

    # one rule per line: ACTION on MATCH... | ACTION on any
    poison 1805 on process.ppid 4242
    pass on poison 1805
    drop on process.exe "/usr/bin/*"
    pass on process.uid 0 process.exe /usr/sbin/sshd
    drop on any

- Actions: ``pass``, ``drop``, ``poison TAG`` (TAG a non-zero u64).
- Matches (all must hold): ``process.pid``, ``process.ppid``,
  ``process.uid`` and ``process.gid`` (the real ids), ``process.sid``
  (u32 each; pid and ppid non-zero), ``process.exe`` and ``file.path``
  (a string with at most one ``*``: exact, ``pre*``, ``*post`` or
  ``pre*post``; ``*`` matches ``/`` too), ``poison TAG``. ``file.path``
  matches a file event's path (a move's new name, as upstream), never an
  event whose path is unknown nor an event of another kind.
  ``container.id`` and ``container.runtime`` (string patterns too, the
  runtime one of :data:`quark.container.RUNTIMES`) match the process's
  :attr:`quark.Process.container`, never a process outside containers.
- Rules run in order after aggregation and enrichment. The first matching
  ``pass`` or ``drop`` decides; ``poison`` rules tag the event's process and
  evaluation goes on; no match passes. A tag is inherited by children at
  fork, so whole subtrees can be passed or dropped. At open the rules run
  over every scraped process, so existing processes are poisoned too.
- Lexing: words are separated by spaces or tabs; ``#`` starts a comment;
  ``"..."`` quotes a word (a quoted word is never a keyword); ``\\`` escapes
  the next character, and at the end of a line continues it; NUL is refused;
  a word is at most 4096 bytes.

Every rule counts ``evals`` and ``hits``. Errors raise
:class:`quark.RuleError` with the line and column.
"""

from __future__ import annotations

import enum
import sys
from dataclasses import dataclass, field

from quark.container import RUNTIMES
from quark.errors import RuleError
from quark.events import Event

__all__ = ["Action", "Match", "Pattern", "Rule", "Ruleset"]

WORD_MAX = 4096
U32_MAX = 2**32 - 1
U64_MAX = 2**64 - 1


class Action(enum.IntEnum):
    """Upstream's ``QUARK_RA_*`` values."""

    DROP = 1
    PASS = 2
    POISON = 3


@dataclass(frozen=True)
class Pattern:
    """A string with at most one ``*``."""

    prefix: str
    suffix: str | None  # None: no "*", exact match against prefix

    @classmethod
    def parse(cls, text: str, line: int, col: int) -> Pattern:
        if not text:
            raise RuleError("empty pattern", line=line, column=col)
        if len(text.encode()) >= WORD_MAX:
            raise RuleError("pattern too long", line=line, column=col)
        if text.count("*") > 1:
            raise RuleError("at most one '*' in a pattern", line=line,
                            column=col)  # fmt: skip
        if "*" not in text:
            return cls(text, None)
        pre, _, post = text.partition("*")
        return cls(pre, post)

    def matches(self, s: str | None) -> bool:
        if s is None:
            return False
        if self.suffix is None:
            return s == self.prefix
        return (
            len(s) >= len(self.prefix) + len(self.suffix)
            and s.startswith(self.prefix)
            and s.endswith(self.suffix)
        )

    def __str__(self) -> str:
        return (
            self.prefix
            if self.suffix is None
            else (f"{self.prefix}*{self.suffix}")
        )


@dataclass(frozen=True)
class Match:
    field: str
    value: int | Pattern


@dataclass
class Rule:
    action: Action
    matches: tuple[Match, ...]
    poison_tag: int = 0
    line: int = 0
    evals: int = 0
    hits: int = 0

    def test(self, ev: Event, tag: int | None) -> bool:
        p = ev.process
        for m in self.matches:
            f, v = m.field, m.value
            if f == "poison":
                if tag != v:
                    return False
            elif f == "file.path":
                assert isinstance(v, Pattern)
                file = ev.file
                if file is None or not v.matches(file.path):
                    return False
            elif p is None:
                return False
            elif f == "process.exe":
                assert isinstance(v, Pattern)
                if not v.matches(p.exe):
                    return False
            elif f in _CONTAINER:
                assert isinstance(v, Pattern)
                c = p.container
                if c is None or not v.matches(getattr(c, _CONTAINER[f])):
                    return False
            elif getattr(p, _ATTR[f]) != v:
                return False
        return True


_ATTR = {
    "process.pid": "pid",
    "process.ppid": "ppid",
    "process.uid": "uid",
    "process.gid": "gid",
    "process.sid": "sid",
}
_INT_FIELDS = {**dict.fromkeys(_ATTR, U32_MAX), "poison": U64_MAX}
# container.* -> the quark.Container member (a string pattern each)
_CONTAINER = {"container.id": "id", "container.runtime": "runtime"}
_STR_FIELDS = ("process.exe", "file.path", *_CONTAINER)
_KEYWORDS = {"pass", "drop", "poison", "on", "any", *_ATTR, *_STR_FIELDS}


@dataclass(frozen=True)
class _Word:
    text: str
    quoted: bool
    line: int
    col: int

    def keyword(self, *names: str) -> bool:
        return not self.quoted and self.text in names


def _lex(text: str) -> list[list[_Word]]:
    """Lines of words (empty lines dropped)."""
    lines: list[list[_Word]] = []
    words: list[_Word] = []
    buf: list[str] = []
    quoted = in_quotes = False
    line, col = 1, 0
    start = (1, 1)
    i, n = 0, len(text)

    def flush() -> None:
        nonlocal buf, quoted
        if buf or quoted:
            word = "".join(buf)
            if len(word.encode()) > WORD_MAX:
                raise RuleError("word too long", line=start[0],
                                column=start[1])  # fmt: skip
            words.append(_Word(word, quoted, *start))
        buf, quoted = [], False

    while i < n:
        c = text[i]
        i += 1
        col += 1
        if c == "\0":
            raise RuleError("NUL byte in rules", line=line, column=col)
        if c == "\\":
            if i >= n:
                raise RuleError("'\\' at the end of the input", line=line,
                                column=col)  # fmt: skip
            nxt = text[i]
            i += 1
            if nxt == "\n":  # line continuation
                line, col = line + 1, 0
                continue
            if not buf and not quoted:
                start = (line, col)
            buf.append(nxt)
            col += 1
            continue
        if in_quotes:
            if c == '"':
                in_quotes = False
            elif c == "\n":
                raise RuleError("unterminated quote", line=line, column=col)
            else:
                buf.append(c)
            continue
        if c == '"':
            if not buf and not quoted:
                start = (line, col)
            in_quotes = quoted = True
            continue
        if c == "#":
            while i < n and text[i] != "\n":
                i += 1
            continue
        if c in " \t\r":
            flush()
            continue
        if c == "\n":
            flush()
            if words:
                lines.append(words)
            words = []
            line, col = line + 1, 0
            continue
        if not buf and not quoted:
            start = (line, col)
        buf.append(c)
    if in_quotes:
        raise RuleError("unterminated quote", line=line, column=col)
    flush()
    if words:
        lines.append(words)
    return lines


def _number(w: _Word, maximum: int, what: str) -> int:
    if not w.text.isdigit() or not w.text.isascii():
        raise RuleError(f"{what} must be a decimal number, not {w.text!r}",
                        line=w.line, column=w.col)  # fmt: skip
    v = int(w.text)
    if v > maximum:
        raise RuleError(f"{what} {w.text} is out of range", line=w.line,
                        column=w.col)  # fmt: skip
    return v


def _parse_rule(words: list[_Word]) -> Rule:
    w = words[0]
    pos = 1
    tag = 0
    if w.keyword("pass"):
        action = Action.PASS
    elif w.keyword("drop"):
        action = Action.DROP
    elif w.keyword("poison"):
        action = Action.POISON
        if len(words) < 2:
            raise RuleError("poison needs a tag", line=w.line,
                            column=w.col + len(w.text))  # fmt: skip
        tag = _number(words[1], U64_MAX, "poison tag")
        if tag == 0:
            raise RuleError("poison tag must not be 0", line=words[1].line,
                            column=words[1].col)  # fmt: skip
        pos = 2
    else:
        raise RuleError(f"expected pass, drop or poison, not {w.text!r}",
                        line=w.line, column=w.col)  # fmt: skip
    if pos >= len(words) or not words[pos].keyword("on"):
        at = words[pos] if pos < len(words) else words[-1]
        raise RuleError("expected 'on'", line=at.line, column=at.col)
    pos += 1
    if pos >= len(words):
        last = words[-1]
        raise RuleError("expected matches or 'any'", line=last.line,
                        column=last.col + len(last.text))  # fmt: skip
    if words[pos].keyword("any"):
        if pos + 1 != len(words):
            extra = words[pos + 1]
            raise RuleError("nothing may follow 'any'", line=extra.line,
                            column=extra.col)  # fmt: skip
        return Rule(action, (), tag, w.line)
    matches = []
    while pos < len(words):
        f = words[pos]
        if f.quoted or not (f.text in _INT_FIELDS or f.text in _STR_FIELDS):
            raise RuleError(f"unknown field {f.text!r}", line=f.line,
                            column=f.col)  # fmt: skip
        if pos + 1 >= len(words):
            raise RuleError(f"{f.text} needs a value", line=f.line,
                            column=f.col + len(f.text))  # fmt: skip
        v = words[pos + 1]
        if f.text in _STR_FIELDS:
            value: int | Pattern = Pattern.parse(v.text, v.line, v.col)
            if (
                f.text == "container.runtime"
                and "*" not in v.text
                and v.text not in RUNTIMES
            ):
                raise RuleError(
                    f"container.runtime {v.text!r} is none of "
                    f"{', '.join(RUNTIMES)}",
                    line=v.line,
                    column=v.col,
                )
        else:
            value = _number(v, _INT_FIELDS[f.text], f.text)
            if f.text in ("process.pid", "process.ppid") and value == 0:
                raise RuleError(f"{f.text} must not be 0", line=v.line,
                                column=v.col)  # fmt: skip
            if f.text == "poison" and value == 0:
                raise RuleError("poison tag must not be 0", line=v.line,
                                column=v.col)  # fmt: skip
        matches.append(Match(f.text, value))
        pos += 2
    return Rule(action, tuple(matches), tag, w.line)


@dataclass
class Ruleset:
    """Rules in order. See the module documentation for the DSL."""

    rules: list[Rule] = field(default_factory=list)

    @classmethod
    def parse(cls, text: str) -> Ruleset:
        return cls([_parse_rule(words) for words in _lex(text)])

    @classmethod
    def parse_file(cls, path: str) -> Ruleset:
        """Rules from a file, or from standard input for ``-``."""
        if path == "-":
            return cls.parse(sys.stdin.read())
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except OSError as e:
            raise RuleError(
                f"cannot read rules {path}: {e.strerror}"
            ) from None
        return cls.parse(text)

    def append(self, rule: Rule) -> Rule:
        """Add a rule built through the API."""
        if rule.action == Action.POISON and not rule.poison_tag:
            raise RuleError("a poison rule needs a non-zero tag")
        self.rules.append(rule)
        return rule

    def evaluate(
        self, event: Event, poison_tag: int | None
    ) -> tuple[bool, int | None]:
        """(deliver?, the process's poison tag after the poison rules)."""
        tag = poison_tag
        for rule in self.rules:
            rule.evals += 1
            if not rule.test(event, tag):
                continue
            rule.hits += 1
            if rule.action == Action.POISON:
                tag = rule.poison_tag
                continue
            return rule.action == Action.PASS, tag
        return True, tag

    def reset_counters(self, *, keep_poison: bool = False) -> None:
        """Zero evals and hits (of every rule but the poison ones when
        ``keep_poison``: what the engine does after priming at open)."""
        for rule in self.rules:
            if keep_poison and rule.action == Action.POISON:
                continue
            rule.evals = rule.hits = 0
