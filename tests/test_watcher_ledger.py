"""The watcher's ledger on real files: settling, what is sent once, what is recorded, restarts.

No server: the tests play the loop's part (stat, hash, answer) with a clock they move by hand.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from findme.watcher.files import Signature, Upload, hash_all, scan_folder, stat_all
from findme.watcher.ledger import Figures, Ledger, Notice, Steps
from findme.watcher.manifest import Answer, Manifest

SETTLE_S = 2.0
CREATED = Answer(status="created", photo_id=1)
REJECTED = Answer(status="rejected", error="unsupported_media_type", detail="Not a photo.")


class Folder:
    """A real folder, its manifest and a ledger, driven as the watcher's loop drives them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.manifest_path = root / ".findme-manifest.json"
        self.clock = 0.0
        self.writes = 0
        self.restart()

    def restart(self) -> Steps:
        """A new watcher: the manifest as saved, a new ledger, the first scan."""
        self.manifest, warning = Manifest.load(
            self.manifest_path, server="http://findme.test", event_id=7
        )
        assert warning is None
        self.ledger = Ledger(self.manifest, settle_s=SETTLE_S)
        return self.ledger.start(scan_folder(self.root).files)

    def write(self, name: str, data: bytes) -> None:
        """Write a file and report it, as the OS would; each write leaves its own mtime."""
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        self.writes += 1
        os.utime(path, ns=(self.writes * 10**9, self.writes * 10**9))
        self.ledger.touch(name)

    def rescan(self) -> None:
        self.ledger.recheck(scan_folder(self.root).files)

    def look(self, *, after_s: float = 0.0) -> list[Upload]:
        """One round of stats of the settling files, after_s after the previous one."""
        self.clock += after_s
        observed = stat_all(self.root, self.ledger.settling_paths())
        return self.ledger.observe(observed, self.clock)

    def settle(self) -> list[Upload]:
        """Stat until the settling files have been still for settle_s; those that completed."""
        return self.look() + self.look(after_s=SETTLE_S)

    def admit(self, ready: list[Upload]) -> Steps:
        """Hash what the manifest has no hash for, then hand everything to the ledger."""
        known, unknown = self.ledger.split_known(ready)
        for result in hash_all(self.root, unknown):
            assert isinstance(result, Upload), result
            known.append(result)
        return self.ledger.admit(known)

    def recorded(self, data: bytes) -> dict:
        """The manifest's entry for these bytes, as saved."""
        self.save()
        (target,) = json.loads(self.manifest_path.read_text())["targets"].values()
        return target["photos"][sha(data)]

    def save(self) -> None:
        self.manifest.save_now()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sent(steps: Steps) -> list[str]:
    return [upload.relative for upload in steps.send]


def shown(steps: Steps) -> list[tuple[str, str]]:
    return [(notice.relative, notice.kind) for notice in steps.show]


@pytest.fixture
def folder(tmp_path: Path) -> Folder:
    return Folder(tmp_path)


def test_a_file_is_complete_once_its_signature_stayed_the_same_for_settle_s(folder) -> None:
    folder.write("a.jpg", b"first half")
    assert folder.look() == []
    assert folder.look(after_s=SETTLE_S - 0.1) == []
    (ready,) = folder.look(after_s=0.1)
    assert ready.relative == "a.jpg"
    assert ready.signature == Signature.of((folder.root / "a.jpg").stat())
    assert folder.ledger.settling == 0


def test_a_growing_file_waits_for_settle_s_after_its_last_write(folder) -> None:
    folder.write("a.jpg", b"first half")
    assert folder.look() == []
    with (folder.root / "a.jpg").open("ab") as out:
        out.write(b" and second half")
    assert folder.look(after_s=SETTLE_S - 0.5) == []
    assert folder.look(after_s=SETTLE_S - 0.5) == []  # still within settle_s of the write
    (ready,) = folder.look(after_s=0.5)
    assert ready.size_bytes == len(b"first half and second half")


def test_a_file_that_vanishes_or_is_deleted_is_no_longer_settling(folder) -> None:
    folder.write("gone.jpg", b"x")
    folder.write("roll1/a.jpg", b"a")
    folder.write("roll10/b.jpg", b"b")
    assert folder.look() == []
    (folder.root / "gone.jpg").unlink()
    folder.ledger.forget("roll1")  # a folder deleted: what was in it goes with it
    assert folder.ledger.settling_paths() == ["gone.jpg", "roll10/b.jpg"]
    assert [upload.relative for upload in folder.look(after_s=SETTLE_S)] == ["roll10/b.jpg"]
    assert folder.ledger.settling == 0


def test_bytes_are_sent_once_and_the_answer_is_recorded(folder) -> None:
    folder.write("a.jpg", b"photo a")
    steps = folder.admit(folder.settle())
    assert sent(steps) == ["a.jpg"]
    assert steps.send[0].sha256 == sha(b"photo a")
    assert folder.ledger.admit(steps.send).send == ()  # already on its way
    assert shown(folder.ledger.answered(steps.send[0], CREATED)) == [("a.jpg", "sent")]
    assert folder.manifest.dirty  # for the loop's autosave
    assert folder.recorded(b"photo a")["status"] == "created"
    assert folder.recorded(b"photo a")["paths"] == ["a.jpg"]
    assert folder.ledger.figures() == Figures(seen=1, sent=1)


def test_the_same_bytes_under_a_new_name_while_in_flight_ride_along(folder) -> None:
    folder.write("a.jpg", b"photo a")
    (upload,) = folder.admit(folder.settle()).send
    shutil.copyfile(folder.root / "a.jpg", folder.root / "copy.jpg")
    folder.ledger.touch("copy.jpg")
    (copy,) = folder.settle()
    assert folder.admit([copy]) == Steps()
    notices = folder.ledger.answered(upload, CREATED).show
    assert [(notice.relative, notice.kind) for notice in notices] == [
        ("a.jpg", "sent"),
        ("copy.jpg", "already"),
    ]
    assert folder.recorded(b"photo a")["paths"] == ["a.jpg", "copy.jpg"]
    assert folder.ledger.figures() == Figures(seen=2, sent=1, already=1)


def test_a_copy_riding_along_with_rejected_bytes_is_rejected_too(folder) -> None:
    folder.write("notes.jpg", b"not a photo")
    folder.write("copy.jpg", b"not a photo")
    (upload,) = folder.admit(folder.settle()).send
    assert shown(folder.ledger.answered(upload, REJECTED)) == [
        ("notes.jpg", "rejected"),
        ("copy.jpg", "rejected"),
    ]
    assert folder.ledger.figures() == Figures(seen=2, rejected=2)


def test_a_copy_or_a_rename_after_the_answer_is_shown_but_not_sent(folder) -> None:
    folder.write("a.jpg", b"photo a")
    (upload,) = folder.admit(folder.settle()).send
    folder.ledger.answered(upload, CREATED)
    shutil.copyfile(folder.root / "a.jpg", folder.root / "copy.jpg")
    os.rename(folder.root / "a.jpg", folder.root / "renamed.jpg")
    folder.ledger.forget("a.jpg")
    folder.ledger.touch("copy.jpg")
    folder.ledger.touch("renamed.jpg")
    steps = folder.admit(folder.settle())
    assert sent(steps) == []
    assert sorted(shown(steps)) == [("copy.jpg", "already"), ("renamed.jpg", "already")]
    assert steps.show[0].answer == CREATED
    assert folder.recorded(b"photo a")["paths"] == ["a.jpg", "copy.jpg", "renamed.jpg"]
    assert folder.ledger.figures() == Figures(seen=3, sent=1, already=2)
    # Their hashes are kept too: a restart reads neither file again.
    assert folder.restart() == Steps()
    assert folder.ledger.settling_paths() == []


def test_a_touch_or_a_rewrite_with_the_same_bytes_sends_and_shows_nothing(folder) -> None:
    folder.write("a.jpg", b"photo a")
    (upload,) = folder.admit(folder.settle()).send
    folder.ledger.answered(upload, CREATED)

    folder.ledger.touch("a.jpg")  # an event without a change: dropped at the first stat
    assert folder.look() == []
    assert folder.ledger.settling == 0

    folder.write("a.jpg", b"photo a")
    (again,) = folder.settle()
    assert again.signature != upload.signature
    assert folder.admit([again]) == Steps()
    assert folder.ledger.figures() == Figures(seen=1, sent=1)


def test_new_bytes_under_an_old_name_are_sent(folder) -> None:
    folder.write("a.jpg", b"photo a")
    (first,) = folder.admit(folder.settle()).send
    folder.ledger.answered(first, CREATED)
    folder.write("a.jpg", b"photo a, edited")
    (second,) = folder.admit(folder.settle()).send
    assert second.relative == "a.jpg"
    assert second.sha256 == sha(b"photo a, edited")
    assert shown(folder.ledger.answered(second, Answer("created", photo_id=2))) == [
        ("a.jpg", "sent")
    ]
    assert folder.ledger.figures() == Figures(seen=1, sent=2)


def test_a_rejection_is_recorded_not_retried_and_forgotten_once_the_file_changes(folder) -> None:
    folder.write("notes.jpg", b"not a photo")
    (upload,) = folder.admit(folder.settle()).send
    assert shown(folder.ledger.answered(upload, REJECTED)) == [("notes.jpg", "rejected")]
    assert folder.recorded(b"not a photo")["status"] == "rejected"
    assert folder.recorded(b"not a photo")["error"] == "unsupported_media_type"
    assert folder.ledger.figures().rejected == 1

    folder.write("notes.jpg", b"not a photo")  # rewritten, same bytes: nothing
    (rewritten,) = folder.settle()
    assert folder.admit([rewritten]) == Steps()
    folder.write("copy.jpg", b"not a photo")  # a copy: shown as rejected, never sent
    steps = folder.admit(folder.settle())
    assert steps.send == ()
    assert steps.show == (Notice("copy.jpg", REJECTED, "rejected_earlier"),)
    assert folder.ledger.figures().rejected == 2

    folder.write("notes.jpg", b"a real photo now")
    (fixed,) = folder.admit(folder.settle()).send
    folder.ledger.answered(fixed, CREATED)
    assert folder.ledger.figures() == Figures(seen=2, sent=1, rejected=1)


def test_a_file_changed_after_it_was_queued_settles_again(folder) -> None:
    folder.write("a.jpg", b"photo a")
    folder.write("copy.jpg", b"photo a")
    steps = folder.admit(folder.settle())
    assert sent(steps) == ["a.jpg"]
    folder.ledger.changed(steps.send[0])  # the uploader found other bytes when it read it
    assert sorted(folder.ledger.settling_paths()) == ["a.jpg", "copy.jpg"]
    assert sent(folder.admit(folder.settle())) == ["a.jpg"]


def test_a_rescan_settles_only_what_changed_since_it_was_looked_at(folder) -> None:
    for name in ("answered.jpg", "queued.jpg", "unreadable.jpg", "edited.jpg"):
        folder.write(name, name.encode())
    ready = {upload.relative: upload for upload in folder.settle()}
    unreadable = ready.pop("unreadable.jpg")
    folder.ledger.mark_unreadable(unreadable)
    steps = folder.admit(list(ready.values()))
    answered = next(upload for upload in steps.send if upload.relative == "answered.jpg")
    folder.ledger.answered(answered, CREATED)
    (folder.root / "edited.jpg").write_bytes(b"edited, changed")
    assert folder.ledger.unreadable == 1

    folder.rescan()
    assert folder.ledger.settling_paths() == []  # edited.jpg is still in hand: left alone
    folder.ledger.answered(
        next(upload for upload in steps.send if upload.relative == "edited.jpg"), CREATED
    )
    os.utime(folder.root / "unreadable.jpg", ns=(10**12, 10**12))
    folder.rescan()
    assert sorted(folder.ledger.settling_paths()) == ["edited.jpg", "unreadable.jpg"]
    folder.admit(folder.settle())
    assert folder.ledger.unreadable == 0


def test_a_restart_sends_nothing_already_answered_and_shows_rejections_again(folder) -> None:
    folder.write("a.jpg", b"photo a")
    folder.write("c.jpg", b"photo c")
    folder.write("notes.jpg", b"not a photo")
    uploads = {upload.relative: upload for upload in folder.admit(folder.settle()).send}
    folder.ledger.answered(uploads["a.jpg"], CREATED)
    folder.ledger.answered(uploads["c.jpg"], Answer("duplicate", photo_id=3))
    folder.ledger.answered(uploads["notes.jpg"], REJECTED)
    folder.save()
    (folder.root / "b.jpg").write_bytes(b"photo b")  # arrived while the watcher was off
    os.utime(folder.root / "a.jpg", ns=(10**12, 10**12))  # touched meanwhile

    steps = folder.restart()
    assert steps.send == ()
    assert steps.show == (Notice("notes.jpg", REJECTED, "rejected_earlier"),)
    assert folder.ledger.figures() == Figures(seen=4, already=1, rejected=1)
    assert sorted(folder.ledger.settling_paths()) == ["a.jpg", "b.jpg"]
    steps = folder.admit(folder.settle())
    assert sent(steps) == ["b.jpg"]
    assert shown(steps) == [("a.jpg", "already")]
    assert folder.ledger.figures() == Figures(seen=4, already=2, rejected=1)


def test_a_restart_drops_the_cached_hashes_of_files_no_longer_there(folder) -> None:
    folder.write("a.jpg", b"photo a")
    (upload,) = folder.admit(folder.settle()).send
    folder.ledger.answered(upload, CREATED)
    folder.save()
    signature = upload.signature
    assert folder.manifest.known_hash("a.jpg", signature) == sha(b"photo a")
    (folder.root / "a.jpg").unlink()
    folder.restart()
    assert folder.manifest.known_hash("a.jpg", signature) is None
    assert folder.manifest.answer_for(sha(b"photo a")) == CREATED  # the answer stays
