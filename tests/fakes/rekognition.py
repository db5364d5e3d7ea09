"""A fake Amazon Rekognition: the face APIs FindMe calls, answered from a model of the people.

moto has no Rekognition face APIs, so `FakeRekognition` answers from a model of the collections
(which people each image shows) and passes every exchange through aiobotocore's AioStubber,
which checks each request and each answer against the real service model. The tests and
bench/aws_calls.py put it in front of a real aioboto3 client with `client_for`.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiobotocore.stub import AioStubber

from findme.engines.rekognition.client import RekognitionClient, prepare_image
from findme.engines.rekognition.engine import RekognitionEngine
from findme.services import AppState
from findme.settings import Settings

SAME_PERSON = 99.0


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class FakeRekognition:
    """Rekognition's face APIs as far as FindMe uses them.

    Answers follow from `shows` (who is in each image) and `alike` (look-alikes); each exchange
    is queued on an AioStubber just before the call it answers, one at a time, so the stubber
    validates every request and answer. `delay_s` makes calls last, to observe concurrency.
    """

    def __init__(self, client: Any, *, delay_s: float = 0.0) -> None:
        self.client = client
        self.stubber = AioStubber(client)
        self.stubber.activate()
        self.delay_s = delay_s
        self.people: dict[str, list[str]] = {}
        self.alike: dict[frozenset[str], float] = {}
        self.collections: dict[str, dict[str, tuple[str, str]]] = {}
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.failures: dict[str, list[str]] = {}
        self.before_call: Callable[[str, dict[str, Any]], Awaitable[None]] | None = None
        self.in_flight = 0
        self.peak = 0
        self._deleted: dict[str, str] = {}  # face id -> whose it was, for log()
        self._turn = asyncio.Lock()

    def shows(self, data: bytes, *people: str) -> bytes:
        """`data` shows these people; "?REASON" is a face Rekognition will not index."""
        self.people[sha(prepare_image(data).data)] = list(people)
        return data

    def fail(self, operation: str, code: str) -> None:
        """The next call of `operation` answers this error."""
        self.failures.setdefault(operation, []).append(code)

    def close(self) -> None:
        self.stubber.deactivate()

    def __getattr__(self, operation: str) -> Callable[..., Awaitable[dict[str, Any]]]:
        if operation.startswith("_"):
            raise AttributeError(operation)

        async def call(**params: Any) -> dict[str, Any]:
            return await self._call(operation, params)

        return call

    async def _call(self, operation: str, params: dict[str, Any]) -> dict[str, Any]:
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await asyncio.sleep(self.delay_s)
            if self.before_call is not None:
                await self.before_call(operation, params)
            async with self._turn:
                self.calls.append((operation, params))
                if self.failures.get(operation):
                    code = self.failures[operation].pop(0)
                    self.stubber.add_client_error(operation, code, f"{code} (fake)", 400)
                else:
                    answer = getattr(self, f"_answer_{operation}")(**params)
                    self.stubber.add_response(operation, answer, params)
                response: dict[str, Any] = await getattr(self.client, operation)(**params)
                return response
        finally:
            self.in_flight -= 1

    def log(self) -> list[str]:
        """The calls, readably; the searches of one image sorted (they run side by side)."""
        labels = []
        for operation, params in self.calls:
            name = operation.title().replace("_", "")
            if operation == "index_faces":
                labels.append(f"{name} {params['ExternalImageId']}")
            elif operation == "search_faces":
                owner, person = self._face(params["FaceId"])
                labels.append(f"{name} {owner}/{person}")
            elif operation == "delete_faces":
                owners = sorted(self._deleted.get(face, "?") for face in params["FaceIds"])
                labels.append(f"{name} {' '.join(owners)}")
            else:
                labels.append(name)
        result: list[str] = []
        for label in labels:
            image = label.split("/")[0]
            run = len(result)
            while (
                label.startswith("SearchFaces") and run and result[run - 1].split("/")[0] == image
            ):
                run -= 1
            result[run:] = sorted([*result[run:], label])
        return result

    def _face(self, face_id: str) -> tuple[str, str]:
        for faces in self.collections.values():
            if face_id in faces:
                return faces[face_id]
        return self._deleted.get(face_id, "?"), "?"

    def _similarity(self, a: str, b: str) -> float:
        return SAME_PERSON if a == b else self.alike.get(frozenset((a, b)), 0.0)

    @staticmethod
    def _face_json(face_id: str, external_image_id: str, index: int) -> dict[str, Any]:
        return {
            "FaceId": face_id,
            "BoundingBox": {"Width": 0.2, "Height": 0.3, "Left": 0.1 + 0.3 * index, "Top": 0.2},
            "ImageId": str(uuid.uuid4()),
            "ExternalImageId": external_image_id,
            "Confidence": 99.9,
        }

    def _answer_create_collection(self, CollectionId: str) -> dict[str, Any]:
        self.collections.setdefault(CollectionId, {})
        return {
            "StatusCode": 200,
            "CollectionArn": f"aws:rekognition:us-east-1:123456789012:collection/{CollectionId}",
            "FaceModelVersion": "7.0",
        }

    def _answer_delete_collection(self, CollectionId: str) -> dict[str, Any]:
        self.collections.pop(CollectionId, None)
        return {"StatusCode": 200}

    def _answer_list_collections(self, MaxResults: int = 1000) -> dict[str, Any]:
        names = sorted(self.collections)[:MaxResults]
        return {"CollectionIds": names, "FaceModelVersions": ["7.0"] * len(names)}

    def _answer_index_faces(
        self,
        CollectionId: str,
        Image: dict[str, bytes],
        ExternalImageId: str,
        MaxFaces: int = 100,
    ) -> dict[str, Any]:
        people = self.people.get(sha(Image["Bytes"]), [])
        records, unindexed = [], []
        for index, person in enumerate(people):
            reason = person[1:] if person.startswith("?") else None
            if reason is None and len(records) >= MaxFaces:
                reason = "EXCEEDS_MAX_FACES"
            if reason is not None:
                unindexed.append({"Reasons": [reason], "FaceDetail": {"Confidence": 90.0}})
                continue
            face_id = str(uuid.uuid4())
            self.collections[CollectionId][face_id] = (ExternalImageId, person)
            face = self._face_json(face_id, ExternalImageId, index)
            records.append(
                {
                    "Face": face,
                    "FaceDetail": {"BoundingBox": face["BoundingBox"], "Confidence": 99.9},
                }
            )
        return {"FaceRecords": records, "UnindexedFaces": unindexed, "FaceModelVersion": "7.0"}

    def _answer_search_faces(
        self, CollectionId: str, FaceId: str, FaceMatchThreshold: float, MaxFaces: int
    ) -> dict[str, Any]:
        faces = self.collections[CollectionId]
        person = faces[FaceId][1]
        matches = [
            (self._similarity(person, other), face_id, external_image_id)
            for face_id, (external_image_id, other) in faces.items()
            if face_id != FaceId
        ]
        matches = sorted(m for m in matches if m[0] >= FaceMatchThreshold)[::-1][:MaxFaces]
        return {
            "SearchedFaceId": FaceId,
            "FaceMatches": [
                {"Similarity": similarity, "Face": self._face_json(face_id, external, 0)}
                for similarity, face_id, external in matches
            ],
            "FaceModelVersion": "7.0",
        }

    def _answer_delete_faces(self, CollectionId: str, FaceIds: list[str]) -> dict[str, Any]:
        faces = self.collections.get(CollectionId, {})
        deleted = [face_id for face_id in FaceIds if face_id in faces]
        for face_id in deleted:
            self._deleted[face_id] = faces.pop(face_id)[0]
        return {"DeletedFaces": deleted}


def client_for(client: Any, settings: Settings) -> RekognitionClient:
    """The Rekognition client over `client` (the fake, or a real one), configured as `settings`
    say."""
    return RekognitionClient(
        client=client,
        concurrency=settings.aws_concurrency,
        collection_prefix=settings.rekognition_collection_prefix,
        min_similarity=settings.rekognition_min_similarity,
    )


def engine_with(state: AppState, client: RekognitionClient) -> RekognitionEngine:
    """The app's Rekognition engine, calling `client` instead of its own."""
    engine = state.engine
    assert isinstance(engine, RekognitionEngine)
    return RekognitionEngine(
        db=state.db,
        storage=state.storage,
        client=client,
        local_pool=engine.local_pool,
        on_matches_changed=state.on_matches_changed,
    )
