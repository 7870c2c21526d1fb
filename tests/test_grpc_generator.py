"""The gRPC service follows the Scheduler's public methods, and its field numbers hold.

A Scheduler subclass with one more public method is generated into a temporary folder,
compiled, and served; the committed files must match the Scheduler as it is now.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from tasks_app.admission import Admission
from tasks_app.grpc_api import generate
from tasks_app.grpc_api.schema import UnsupportedType, build_service
from tasks_app.grpc_api.server import GrpcServer
from tasks_app.grpc_api.servicer import GeneratedCodeOutOfDate
from tasks_app.interfaces import UUID, FindOperator, TaskPage, TaskStatus
from tasks_app.scheduler import Scheduler
from tasks_app.storage import DjangoTaskStorage
from tests.harness import ROOT
from tests.processors import RecordingProcessor

FIELD = descriptor_pb2.FieldDescriptorProto
CHECK = [sys.executable, "-m", "tasks_app.grpc_api.generate", "--check"]


class SchedulerWithEcho(Scheduler):
    def echo(self, text: str, times: int = 1) -> str:
        """Answer ``text``, ``times`` times over."""
        return text * times


class SchedulerWithPriority(Scheduler):
    def add_task(self, request: bytes, priority: int = 0) -> Admission:
        return super().add_task(request)


class SchedulerWithoutCursor(Scheduler):
    def find_tasks(  # type: ignore[override]
        self, operators: list[FindOperator], limit: int = 100
    ) -> TaskPage:
        return super().find_tasks(operators, limit)


class SchedulerWithPageNumber(Scheduler):
    def find_tasks(  # type: ignore[override]
        self, operators: list[FindOperator], limit: int = 100, page: int = 1
    ) -> TaskPage:
        return super().find_tasks(operators, limit)


class SchedulerWithNumericUuid(Scheduler):
    def get_task(self, uuid: int) -> None:  # type: ignore[override]
        return None


class SchedulerWithASet(Scheduler):
    def tag(self, uuid: UUID, tags: set[str]) -> None:
        return None


class SchedulerWithAPositionalStop(Scheduler):
    def wait_drained(  # type: ignore[override]
        self, timeout: float, stop: threading.Event | None = None
    ) -> bool:
        return False


def copy_committed_sources(tmp_path: Path) -> Path:
    root = tmp_path / "protos"
    shutil.copytree(generate.PROTO_ROOT, root)
    return root


def lock_numbers(proto_root: Path) -> dict[str, dict[str, int]]:
    return {
        message: {field: entry["number"] for field, entry in fields.items()}
        for message, fields in generate.read_lock(
            proto_root / generate.LOCK_NAME
        ).items()
    }


def compiled_file(proto_root: Path) -> descriptor_pb2.FileDescriptorProto:
    files = descriptor_pb2.FileDescriptorSet.FromString(
        generate.descriptor_set(proto_root)
    ).file
    return next(f for f in files if f.name == generate.PROTO_NAME)


def test_committed_files_are_up_to_date_with_the_scheduler() -> None:
    stale = generate.stale_files(Scheduler)

    assert not stale, (
        "the gRPC files are out of date with tasks_app.scheduler.Scheduler: "
        f"{', '.join(stale)}. Run `{generate.COMMAND}` and commit the result."
    )


def test_every_public_method_is_an_rpc_in_camel_case() -> None:
    service = build_service(Scheduler)

    assert [rpc.name for rpc in service.rpcs] == [
        "AddTask",
        "GetTask",
        "FindTasks",
        "Retry",
        "Close",
        "Open",
        "State",
        "WaitDrained",
    ]
    assert [f.name for f in service.rpc("AddTask").response.fields] == [
        "uuid",
        "created",
        "status",
    ]
    assert [f.name for f in service.rpc("FindTasks").request.fields] == [
        "operators",
        "limit",
        "cursor",
    ]


def test_a_new_public_method_becomes_an_rpc_that_serves(tmp_path: Path) -> None:
    proto_root = copy_committed_sources(tmp_path)
    before = lock_numbers(proto_root)

    generate.generate(SchedulerWithEcho, proto_root, tmp_path / "generated")

    file = compiled_file(proto_root)
    service = next(s for s in file.service if s.name == "Scheduler")
    echo = next(m for m in service.method if m.name == "Echo")
    assert (echo.input_type, echo.output_type) == (
        ".scheduler.v1.EchoRequest",
        ".scheduler.v1.EchoResponse",
    )
    messages = {m.name: m for m in file.message_type}
    assert [(f.name, f.number, f.type) for f in messages["EchoRequest"].field] == [
        ("text", 1, FIELD.TYPE_STRING),
        ("times", 2, FIELD.TYPE_INT64),
    ]
    assert [f.name for f in messages["EchoResponse"].field] == ["echo"]
    assert (
        (tmp_path / "generated" / "scheduler_pb2_grpc.py")
        .read_text()
        .count("/scheduler.v1.Scheduler/Echo'")
    )
    after = lock_numbers(proto_root)
    assert {name: after[name] for name in before} == before

    # Served from the fresh descriptor, in a pool of its own: the committed one is
    # already in this process's default pool under the same file name.
    pool = descriptor_pool.DescriptorPool()
    for proto in descriptor_pb2.FileDescriptorSet.FromString(
        generate.descriptor_set(proto_root)
    ).file:
        pool.Add(proto)
    descriptor = pool.FindServiceByName("scheduler.v1.Scheduler")
    scheduler = SchedulerWithEcho(
        DjangoTaskStorage(), RecordingProcessor(), 1, 1, max_request_bytes=1024
    )
    server = GrpcServer(
        scheduler,
        host="127.0.0.1",
        port=0,
        threads=2,
        max_request_bytes=1024,
        descriptor=descriptor,
        interceptors=[],
    )
    port = server.start()
    try:
        method = descriptor.methods_by_name["Echo"]
        request_class = message_factory.GetMessageClass(method.input_type)
        response_class = message_factory.GetMessageClass(method.output_type)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.unary_unary(
                "/scheduler.v1.Scheduler/Echo",
                request_serializer=request_class.SerializeToString,
                response_deserializer=response_class.FromString,
            )
            assert call(request_class(text="hi", times=3), timeout=10).echo == "hihihi"
            assert call(request_class(text="once"), timeout=10).echo == "once"
    finally:
        server.stop(1)


def test_serving_a_method_the_modules_lack_stops_at_start() -> None:
    scheduler = SchedulerWithEcho(
        DjangoTaskStorage(), RecordingProcessor(), 1, 1, max_request_bytes=1024
    )

    with pytest.raises(GeneratedCodeOutOfDate, match=r"Echo.*tasks_app.grpc_api"):
        GrpcServer(scheduler, port=0, max_request_bytes=1024)


def test_a_new_parameter_takes_the_next_number(tmp_path: Path) -> None:
    proto_root = copy_committed_sources(tmp_path)

    generate.generate(SchedulerWithPriority, proto_root, tmp_path / "generated")

    assert lock_numbers(proto_root)["AddTaskRequest"] == {"request": 1, "priority": 2}
    assert (
        "optional int64 priority = 2;" in (proto_root / generate.PROTO_NAME).read_text()
    )


def test_a_removed_parameter_keeps_its_number_reserved_forever(tmp_path: Path) -> None:
    proto_root = copy_committed_sources(tmp_path)

    generate.generate(SchedulerWithoutCursor, proto_root, tmp_path / "generated")
    proto = (proto_root / generate.PROTO_NAME).read_text()
    assert "reserved 3;" in proto and 'reserved "cursor";' in proto

    generate.generate(SchedulerWithPageNumber, proto_root, tmp_path / "generated")
    numbers = lock_numbers(proto_root)["FindTasksRequest"]
    assert numbers == {"operators": 1, "limit": 2, "cursor": 3, "page": 4}
    message = next(
        m
        for m in compiled_file(proto_root).message_type
        if m.name == "FindTasksRequest"
    )
    assert [(r.start, r.end) for r in message.reserved_range] == [(3, 4)]


def test_a_field_that_changes_type_is_refused(tmp_path: Path) -> None:
    proto_root = copy_committed_sources(tmp_path)

    with pytest.raises(generate.GenerationError, match=r"GetTaskRequest\.uuid"):
        generate.generate(SchedulerWithNumericUuid, proto_root, tmp_path / "generated")
    assert not generate.stale_files(Scheduler, proto_root)


def test_a_type_without_a_mapping_names_the_method() -> None:
    with pytest.raises(UnsupportedType, match=r"Scheduler\.tag\(tags\)"):
        build_service(SchedulerWithASet)


def test_a_stop_event_is_no_field_and_makes_the_rpc_a_wait() -> None:
    service = build_service(Scheduler)

    wait = service.rpc("WaitDrained")
    assert wait.stop_parameter == "stop"
    assert [field.name for field in wait.request.fields] == ["timeout"]
    assert [p.name for p in wait.parameters] == ["timeout"]
    assert service.rpc("State").stop_parameter is None


def test_a_stop_event_that_callers_would_have_to_pass_is_refused() -> None:
    with pytest.raises(
        UnsupportedType, match=r"Event parameter \(stop\) must be keyword"
    ):
        build_service(SchedulerWithAPositionalStop)


def test_enums_are_strings_listing_their_values() -> None:
    status = build_service(Scheduler).rpc("GetTask").response.field("status")

    assert status.proto_type == "string"
    assert status.comment == "one of: " + ", ".join(s.value for s in TaskStatus)


def test_check_command_names_the_stale_file_and_the_fix(tmp_path: Path) -> None:
    proto_root = copy_committed_sources(tmp_path)
    out = tmp_path / "generated"
    shutil.copytree(generate.GENERATED_DIR, out)

    current = subprocess.run(
        [*CHECK, "--proto-root", str(proto_root), "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert current.returncode == 0, current.stderr

    stale = subprocess.run(
        [
            *CHECK,
            "--scheduler",
            "tests.test_grpc_generator:SchedulerWithEcho",
            "--proto-root",
            str(proto_root),
            "--out",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert stale.returncode == 1
    assert "scheduler.proto" in stale.stderr
    assert generate.COMMAND in stale.stderr
