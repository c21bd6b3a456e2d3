"""One file's way to Segment, in one place: decode its blocks → keep the records that are sent → map them to track
calls → cut the calls into requests → send → dead-letter what could not be sent → say that the file is finished.

`Delivery` does this for the files of one worker, one after the other, in the order they come. A file is *finished*
once every unit of it is accounted for: each record read is dropped and counted, or accepted by Segment, or in a
dead-letter file that is complete; and each unreadable part of it has its letter in such a file. Requests are cut
across files (a small file does not make a small request of its own) and several are in flight at once, so a file
may finish while later ones are read: `deliver(file)` returns the files finished since the last call; `flush()`
sends what is held, waits for every answer, makes the letters durable and returns the files finished since, so that
every file handed in before is finished when it returns; `finish()` does the same at the end of a bundle (a Beam
bundle ends only then: a file is finished in the bundle that read it).

In a watch, from a request's first failed attempt until Segment answers, the next file is not read (`deliver`
waits: the sender holds it), and past the retry budget the requests sent wait for Segment to answer. If the watch gives up on Segment (an outage longer than
--max_outage_hours, or a drain during one), nothing more is sent: the events not delivered are held back (counted
as held_back, not dead-lettered), their files are not finished and the files not read yet are not read (both
counted as files_held_back), so the ledger records none of them and the next watch reads them again.

A file that cannot be opened or read to its end (deleted since the listing, storage unreachable) is one
`unreadable_file` letter for what was not read, and is never returned: the ledger does not record it, and a later
run reads it again. Corruption costs only what it touches (see transforms.currents.avro_blocks): an unreadable
header is one letter for the whole file, each skipped region one letter with its byte range, a record whose strings
are not UTF-8 an `invalid_record` letter.

Events with the same messageId (Currents delivers at least once) are counted as duplicate ids when the second comes
within the last ids this worker saw in its bundle (`RecentIds`); both are sent, and Segment deduplicates them.

The parts it is made of know one thing each (Currents: transforms.currents; Segment: transforms.segment), and so does
this module: it imports no Beam module. What it counts goes to a `count(name, n)` it is given; where letters go
(`letters`: an AccountedLines) and how requests are sent (`sender`: see transforms.senders) too.
"""
import re
import time
from typing import NamedTuple, Optional

import orjson

from currents_to_segment.transforms import letters as dead_letters
from currents_to_segment.transforms.currents import avro_blocks, records as currents_records
from currents_to_segment.transforms.currents.records import RecordFilter
from currents_to_segment.transforms.currents.track_calls import (
    RecordProtection, TrackBuilder, TrackSettings, namespace_uuid, protect)
from currents_to_segment.transforms.letters import INVALID_RECORD
from currents_to_segment.transforms.segment.api import EVENT_TOO_LARGE, HELD_BACK, MAX_EVENT_BYTES
from currents_to_segment.transforms.segment.batching import Batcher, BatchSettings, RecentIds

# Counter names (per event type: "<name>:<event type>").
READ = "read"
DEAD_LETTERED = "dead_lettered"
UNSUPPORTED_EVENT_TYPE = "unsupported_event_type"
FILES_READ = "files_read"
UNREADABLE_FILES = "unreadable_files"
DEAD_LETTERS_MADE = "dead_letters_made"
LETTERS = "dead_letters"  # letters written, by reason: "dead_letters:<reason>"
RECORDS_LOST = "records_lost"  # records in unreadable parts of files, as far as their blocks say (never read)
DUPLICATE_IDS = "duplicate_ids"
FILES_UNBALANCED = "ledger_files_unbalanced"
# Observed per file once it is finished (see `observe`): from its landing (modification time) to its last event
# accepted by Segment, in milliseconds; and the time of its oldest and newest event sent (UNIX seconds).
DELIVERY_LAG_MS = "delivery_lag_ms"
EVENT_TIME = "event_time"
# A watch that gave up on Segment: events read and held back (per event type: "held_back:<event type>"), files left
# unfinished (read in part, or not read), and why it gave up (a count of OUTAGE_TOO_LONG or DRAINED_IN_OUTAGE).
FILES_HELD_BACK = "files_held_back"


class CurrentsFile(NamedTuple):
    """A listed Currents file: its path, size, modification time (UNIX seconds) and event type (from its path or
    its header; None when neither could be read)."""

    path: str
    size: int
    modified: float
    event_type: Optional[str]


# Not a file: the route's word to a branch that it is time to send what it holds (see transforms.files).
FLUSH = CurrentsFile(None, 0, 0.0, None)


class StorageError(Exception):
    """A file listed by the run could not be opened or read to its end."""


class _Account:
    """What is known of one file being delivered: its units (records read and unreadable parts) and how many are
    accounted for."""

    __slots__ = ("file", "event_type", "units", "decoded", "handled", "read", "recordable", "held", "accepted_at",
                 "oldest", "newest")

    def __init__(self, file):
        self.file = file
        self.event_type = file.event_type
        self.units = self.decoded = self.handled = 0  # decoded: records read so far (for the letters' counts)
        self.read = False  # read to its end (or as far as it could be)
        self.recordable = True  # False when part of it could not be read from storage, or was held back
        self.held = False  # some of its events were held back (a watch gave up on Segment)
        self.accepted_at = None  # when Segment last accepted one of its events (UNIX seconds)
        self.oldest = self.newest = None  # the time of its oldest and newest event batched to be sent

    @property
    def finished(self):
        return self.read and self.handled == self.units


def region_letter(path, event_type, region, events_read):
    """The dead letter of a skipped region of a file (an avro_blocks.BadRegion)."""
    return dead_letters.file_letter(path, event_type, region.error, events_read, (region.start, region.end),
                                    region.records_lost)


def undecodable_letter(path, event_type, undecodable, protection=None):
    """The invalid_record letter of a record some of whose strings are not UTF-8 (an UndecodableRecord); with a
    RecordProtection, its redacted and hashed values protected (the bytes of the problem too)."""
    record = undecodable.record
    kept = protection.protected(event_type, record) if protection is not None else record

    def shown(field, data):  # the bytes, unless the letter leaves out or hashes the field they are in
        top = re.split(r"[.\[]", field, maxsplit=1)[0]
        return f"{field} is not valid UTF-8: {data!r}"[:300] if kept.get(top) == record.get(top) else (
            f"{field} is not valid UTF-8")

    problems = "; ".join(shown(field, data) for field, data in zip(undecodable.fields, undecodable.raw))
    return dead_letters.record_letter(event_type, path, kept, INVALID_RECORD,
                                      f"{problems} (the record shows those bytes as \\x escapes)")


class Delivery:
    """The files of one worker on their way to Segment (see the module doc).

    track: the TrackSettings of the calls (its mapping: the catalog; types it has no row for are counted as
    unsupported_event_type); record_filter: a RecordFilter; batch: BatchSettings; sender: submit/done/drain
    of requests, each a list of (event type, file account, messageId, payload); letters: write(line, accounts) and
    commit() → accounts; count(name, n): the counters; observe(name, value): the values observed (DELIVERY_LAG_MS,
    EVENT_TIME) of each file once it is finished; destination: what every letter says of where its events
    were going (transforms.letters.destination; None in a dry run); clock: UNIX seconds now.
    """

    def __init__(self, *, track: TrackSettings, record_filter: RecordFilter, batch: BatchSettings, sender, letters,
                 count, observe=lambda name, value: None, destination=None, clock=time.time):
        self._mapping = track.mapping
        self._track = track
        self._filter = record_filter
        self._window_seconds = batch.window_seconds
        self._batcher = Batcher(batch)
        self._seen = RecentIds()
        self._open = {}  # the accounts of the files not finished yet
        self._sender = sender
        self._letters = letters
        self._count = count
        self._observe = observe
        self._clock = clock
        self._namespace = namespace_uuid(track.message_id_namespace)
        self._builders = {}
        self._protect = track.redact or track.hashed
        # What a record's dead letter may keep of it: the values the run would have sent, as it would have.
        self._record_protection = (RecordProtection(track.mapping, track.redact, track.hashed, track.passthrough)
                                   if self._protect else None)
        self._gave_up = None  # why the sender gave up on Segment, once this delivery has seen it
        self._destination = destination  # every letter's (letters.destination; None in a dry run)

    # --- the work of one file --------------------------------------------------------------------------------

    def deliver(self, file, open_stream):
        """Deliver one CurrentsFile (`open_stream()`: a context manager of its bytes); the files finished since
        the last call (this one among them, or not yet). In a watch, waits first while Segment is down; once the
        watch has given up on Segment, the file is not read."""
        if not self._sender.wait_for_segment():
            self._count(FILES_HELD_BACK, 1)
            self._saw_give_up()
            return self._collect()
        account = _Account(file)
        self._open[id(account)] = account
        for piece in self._pieces(account, open_stream):
            if isinstance(piece, avro_blocks.GoodBlock):
                decoded = len(piece.records) + len(piece.undecodable)
                account.units += decoded
                self._count(f"{READ}:{account.event_type}", decoded)
                self._records(account, piece.records)
                for undecodable in piece.undecodable:
                    self._letter(account, undecodable_letter(file.path, account.event_type, undecodable,
                                                             self._record_protection))
                account.decoded += decoded
            elif isinstance(piece, avro_blocks.BadRegion):
                account.units += 1
                self._letter(account, region_letter(file.path, account.event_type, piece, account.decoded))
            else:  # the letter of a file that could not be read (further)
                account.units += 1
                self._letter(account, piece)
            self._settle(self._sender.done())
        self._count(FILES_READ, 1)
        account.read = True
        return self._collect()

    def _pieces(self, account, open_stream):
        """The GoodBlocks and BadRegions of a file in order, then, when it could not be read to its end, the letter
        of what was not; errors of the reading only (a generator: what the caller raises is not caught here)."""
        path, position = account.file.path, 0
        try:
            with open_stream() as stream:
                account.event_type, container = currents_records.open_file(path, stream)
                for piece in container:
                    position = piece.end
                    yield piece  # the caller has dealt with it when the next one is read
        except avro_blocks.CorruptHeader as error:  # not an Avro file, or a broken header: nothing can be read
            yield dead_letters.file_letter(path, account.event_type, error, account.decoded, (0, account.file.size))
        except Exception as error:  # pylint: disable=broad-except  # storage: gone since the listing, or unreachable
            account.recordable = False  # the ledger must not record it: a later run reads it again
            yield dead_letters.file_letter(
                path, account.event_type,
                StorageError(f"cannot read the file from storage: {type(error).__name__}: {error}"),
                account.decoded, (position, account.file.size))

    def _records(self, account, block):
        """Filter, map and batch the records of one block."""
        event_type, reason_of = account.event_type, self._filter.reason
        kept, dropped = [], {}
        for record in block:
            reason = reason_of(record)
            if reason is None:
                kept.append(record)
            else:
                dropped[reason] = dropped.get(reason, 0) + 1
        for reason, n in dropped.items():
            self._count(f"{reason}:{event_type}", n)
            account.handled += n
        if not kept:
            return
        builder = self._builder(event_type)
        if builder is None:  # a type the mapping does not send
            self._count(f"{UNSUPPORTED_EVENT_TYPE}:{event_type}", len(kept))
            account.handled += len(kept)
            return
        window_seconds, add, seen_before = self._window_seconds, self._batcher.add, self._seen.seen_before
        ready, duplicates, oldest, newest = [], 0, account.oldest, account.newest
        for record in kept:
            try:
                message = builder.build(record)
                if self._protect:
                    protect(message, self._track.redact, self._track.hashed)
                payload = orjson.dumps(message)  # the builder has checked every value it took from the record
            except Exception as error:  # pylint: disable=broad-except  # any value that cannot be mapped costs its record
                self._letter(account, dead_letters.record_letter(event_type, account.file.path, record,
                                                                 INVALID_RECORD, error, self._record_protection))
                continue
            message_id = message["messageId"]
            if len(payload) > MAX_EVENT_BYTES:
                self._letter(account, dead_letters.call_letter(
                    event_type, account.file.path, message_id, payload, EVENT_TOO_LARGE,
                    error=f"{len(payload)} bytes serialized, Segment accepts at most {MAX_EVENT_BYTES}"))
                continue
            if seen_before(message_id):
                duplicates += 1
            when = record["time"]
            if oldest is None or when < oldest:
                oldest = when
            if newest is None or when > newest:
                newest = when
            ready += add(when // window_seconds, (event_type, account, message_id, payload), len(payload))
        account.oldest, account.newest = oldest, newest
        if duplicates:
            self._count(DUPLICATE_IDS, duplicates)
        for _, calls in ready:
            self._settle(self._sender.submit(calls))

    def _builder(self, event_type):
        """The TrackBuilder of a type (None for a type the mapping does not send)."""
        try:
            return self._builders[event_type]
        except KeyError:
            track = self._track
            builder = self._builders[event_type] = (
                TrackBuilder(event_type, mapping=self._mapping, namespace=self._namespace,
                             passthrough=track.passthrough, integrations=track.integrations)
                if self._mapping.spec_for(event_type) is not None else None)
            return builder

    # --- accounting ------------------------------------------------------------------------------------------

    def _letter(self, account, letter):
        letter["destination"] = self._destination  # where its events were going: a replay sends it nowhere else
        self._count(DEAD_LETTERS_MADE, 1)
        lost = letter.get("records_lost") or 0  # records of an unreadable part of a file, never read
        self._letters.write(dead_letters.to_line(letter), (((account, letter["reason"], lost), 1),))

    def _settle(self, answered):
        """Account for the requests answered: accepted events are handled, held-back ones counted (their file is
        not recordable), the others dead-lettered."""
        for calls, report in answered:
            if report.accepted:
                now = self._clock()
            for index in report.accepted:
                account = calls[index][1]
                account.handled += 1
                account.accepted_at = now
            for rejection in report.rejected:
                event_type, account, message_id, payload = calls[rejection.index]
                if rejection.reason == HELD_BACK:
                    self._hold_back(account, event_type)
                    continue
                self._letter(account, dead_letters.call_letter(
                    event_type, account.file.path, message_id, payload, rejection.reason,
                    http_status=rejection.status, response_excerpt=rejection.response_excerpt))

    def _hold_back(self, account, event_type):
        """An event of this file was not delivered: the watch gave up on Segment."""
        self._count(f"{HELD_BACK}:{event_type}", 1)
        account.handled += 1
        if not account.held:
            account.held, account.recordable = True, False
            self._count(FILES_HELD_BACK, 1)
            self._saw_give_up()

    def _saw_give_up(self):
        """Count, once per delivery, why the watch gave up on Segment."""
        if self._gave_up is None and self._sender.gave_up:
            self._gave_up = self._sender.gave_up
            self._count(self._gave_up, 1)

    def _commit_letters(self):
        """Make the letters written so far durable, and account for them."""
        for (account, reason, lost), n in self._letters.commit():
            self._count(f"{LETTERS}:{reason}", n)
            if reason == dead_letters.UNREADABLE_FILE:
                self._count(UNREADABLE_FILES, n)
                if lost:
                    self._count(RECORDS_LOST, lost * n)
            else:
                self._count(f"{DEAD_LETTERED}:{account.event_type}", n)
            account.handled += n

    def flush(self):
        """Send every open request, wait for every answer, make the letters durable; the files finished since the
        last call."""
        for _, calls in self._batcher.drain():
            self._settle(self._sender.submit(calls))
        self._settle(self._sender.drain())
        self._commit_letters()
        return self._collect()

    def _collect(self):
        """The files now finished (those that can be recorded), forgotten."""
        finished = [account for account in self._open.values() if account.finished]
        for account in finished:
            del self._open[id(account)]
            self._observe_file(account)
        return [account.file for account in finished if account.recordable]

    def _observe_file(self, account):
        """The lag and event times of a finished file."""
        if account.accepted_at is not None and account.file.modified > 0:
            self._observe(DELIVERY_LAG_MS, max(round((account.accepted_at - account.file.modified) * 1000), 0))
        if account.oldest is not None:
            self._observe(EVENT_TIME, account.oldest)
            self._observe(EVENT_TIME, account.newest)

    def finish(self):
        """The end of a bundle: send and account for everything held; the files finished since the last call. A file
        still not finished then (a bug: every unit is accounted for by now) is counted as unbalanced, and forgotten,
        as are the messageIds seen (duplicates are counted per bundle)."""
        finished = self.flush()
        unbalanced = [account for account in self._open.values() if account.recordable]
        if unbalanced:
            self._count(FILES_UNBALANCED, len(unbalanced))
        self._open = {}
        self._seen = RecentIds()
        return finished
