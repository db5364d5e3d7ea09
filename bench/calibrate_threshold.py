"""Distances between the selfies and the event faces of the shared set, and what each threshold
would match: the evidence for DEFAULT_MATCH_THRESHOLD (docs/RECOGNITION.md).

    .venv/bin/python -m bench.calibrate_threshold

Event faces are labelled from manifest.json: in each photo, the people the manifest names take
their nearest face (one face each), and faces left over are strangers (the third person in
e13.jpg). Pairs of a selfie and a face of that person are "same", every other pair "different".
"""

from __future__ import annotations

from findme.engines.local.faces import (
    DEFAULT_MATCH_THRESHOLD,
    analyse_photo,
    analyse_selfie,
    descriptor_distance,
)
from findme.engines.matching import nearest_member
from tests.shared_faces import faces_dir, manifest

MIN_FACE_PX = 120  # the settings default
THRESHOLDS = [round(0.40 + 0.025 * i, 3) for i in range(9)]
STRANGER = "(stranger)"


def main() -> None:
    data = manifest()
    folder = faces_dir()
    people = sorted(data["selfies"])
    selfies = {}
    for person in people:
        (face,) = analyse_selfie((folder / data["selfies"][person]).read_bytes()).faces
        selfies[person] = face.descriptor

    # (photo, label, descriptor) per event face, labelled as the module docstring says.
    faces: list[tuple[str, str, bytes]] = []
    for name, info in data["event"].items():
        found = analyse_photo((folder / "event" / name).read_bytes(), min_face_px=MIN_FACE_PX)
        left = [face.descriptor for face in found.faces]
        for person in info["people"]:
            nearest = min(left, key=lambda d, p=person: descriptor_distance(d, selfies[p]))
            left.remove(nearest)
            faces.append((name, person, nearest))
        faces.extend((name, STRANGER, descriptor) for descriptor in left)

    print(f"Distance from each event face (rows) to each selfie (columns); min face {MIN_FACE_PX}")
    print(f"{'photo':8} {'face of':20}" + "".join(f"{p[:12]:>13}" for p in people))
    same: list[float] = []
    different: list[float] = []
    for name, label, descriptor in faces:
        row = []
        for person in people:
            distance = descriptor_distance(descriptor, selfies[person])
            (same if person == label else different).append(distance)
            row.append(f"{distance:>12.3f}{'*' if person == label else ' '}")
        print(f"{name:8} {label:20}" + "".join(row))
    print("(* same person)\n")
    print(f"same person:      {len(same):3} pairs, min {min(same):.3f}, max {max(same):.3f}")
    print(
        f"different people: {len(different):3} pairs, min {min(different):.3f}, "
        f"max {max(different):.3f}\n"
    )

    members = dict(enumerate(people))
    member_descriptors = {i: selfies[p] for i, p in members.items()}
    attendee_faces = sum(label != STRANGER for _, label, _ in faces)
    print("threshold  matched  correct  wrong  missed  precision  recall  my photos exact")
    for threshold in THRESHOLDS:
        correct = wrong = 0
        my_photos: dict[str, set[str]] = {p: set() for p in people}
        for name, label, descriptor in faces:
            found = nearest_member(descriptor, member_descriptors, threshold=threshold)
            if found is None:
                continue
            person = members[found[0]]
            my_photos[person].add(name)
            correct += person == label
            wrong += person != label
        matched = correct + wrong
        precision = correct / matched if matched else 1.0
        exact = {p: sorted(n) for p, n in my_photos.items()} == data["expected_my_photos"]
        mark = "  <- DEFAULT_MATCH_THRESHOLD" if threshold == DEFAULT_MATCH_THRESHOLD else ""
        print(
            f"{threshold:9.3f} {matched:8} {correct:8} {wrong:6} {attendee_faces - correct:7}"
            f" {precision:10.3f} {correct / attendee_faces:7.3f}  {'yes' if exact else 'no':>15}"
            f"{mark}"
        )
    print(
        f"\nDEFAULT_MATCH_THRESHOLD = {DEFAULT_MATCH_THRESHOLD}: "
        f"{DEFAULT_MATCH_THRESHOLD - max(same):+.3f} above the farthest same-person pair, "
        f"{min(different) - DEFAULT_MATCH_THRESHOLD:+.3f} below the nearest different-person pair."
    )


if __name__ == "__main__":
    main()
