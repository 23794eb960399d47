"""The deployment files, checked without a Docker engine or a cluster: every YAML parses;
every command a container, pod or Procfile line runs is a `quorra` subcommand or console
script; every variable they set is one Settings reads; ports and grace periods agree; the
Helm chart is rendered by Helm's own engine and every manifest is validated against the
Kubernetes schemas; the packaging extras cover what each role imports; and the image's
Python layer is built as the Dockerfile builds it (a wheel, installed into a fresh venv)."""

from __future__ import annotations

import configparser
import json
import os
import re
import shlex
import subprocess
import sys
import sysconfig
import zipfile
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml
from packaging.requirements import Requirement

from quorra.cli.admin import main as quorra_cli
from quorra.config import Settings, parse_address, parse_duration
from tests.conftest import REPO

DEPLOYMENTS = REPO / "deployments"
COMPOSE = DEPLOYMENTS / "docker-compose.yml"
K8S = DEPLOYMENTS / "k8s"
CHART = DEPLOYMENTS / "helm" / "quorra"
KUBERNETES_VERSION = "1.33.0"  # the oldest Kubernetes the manifests are checked against
ROLES = ("web", "grpc", "scheduler", "worker")
QUORRA_SERVICES = ("migrate", *ROLES)
# Kubernetes: pod grace = the process's grace + this margin
TERMINATION_MARGIN_SECONDS = 5
SUBPROCESS_TIMEOUT_SECONDS = 240


@cache
def settings_variables() -> frozenset[str]:
    """Every variable Settings reads, and the one prometheus_client reads itself."""
    return frozenset({field.alias for field in Settings.model_fields.values()} | {"PROMETHEUS_MULTIPROC_DIR"})


@cache
def console_scripts() -> frozenset[str]:
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    lines = config["options.entry_points"]["console_scripts"].strip().splitlines()
    return frozenset(line.split("=")[0].strip() for line in lines)


def assert_runs_quorra(argv: list[str], where: str) -> None:
    """`argv` (what runs after the image's `quorra` entry point, or a whole command line) names
    a real `quorra` subcommand or console script."""
    assert argv, where
    if argv[0] in console_scripts() - {"quorra"}:
        return
    subcommand = argv[1] if argv[0] == "quorra" else argv[0]
    assert subcommand in quorra_cli.commands, f"{where}: `quorra {subcommand}` is no quorra command"


def load_yaml_documents(path: Path) -> list[Any]:
    return [document for document in yaml.safe_load_all(path.read_text()) if document is not None]


def test_every_yaml_file_of_the_deployment_parses():
    files = [REPO / "docker-compose.yml", *DEPLOYMENTS.rglob("*.yml"), *DEPLOYMENTS.rglob("*.yaml")]
    templates = CHART / "templates"
    for path in files:
        if templates not in path.parents:  # Go templates: rendered and parsed below
            assert load_yaml_documents(path), path


# -- packaging -------------------------------------------------------------------------------


@cache
def setup_cfg() -> configparser.ConfigParser:
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    return config


def requirements_of(section: str, key: str) -> list[Requirement]:
    return [Requirement(line) for line in setup_cfg()[section][key].strip().splitlines()]


def extras() -> dict[str, list[Requirement]]:
    return {name: requirements_of("options.extras_require", name) for name in setup_cfg()["options.extras_require"]}


@cache
def pinned() -> dict[str, str]:
    """requirements.txt: name -> exact version."""
    pins = {}
    for line in (REPO / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"requirements.txt pins exactly: {line}"
            pins[canonical(name)] = version
    return pins


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_setup_cfg_pins_loosely_and_requirements_txt_pins_each_dependency_inside_those_ranges():
    install_requires = requirements_of("options", "install_requires")
    every = install_requires + [req for reqs in extras().values() for req in reqs if canonical(req.name) != "quorra"]

    assert all("==" not in str(req.specifier) for req in every)
    for req in every:
        assert canonical(req.name) in pinned(), f"{req.name} is not pinned in requirements.txt"
        assert req.specifier.contains(pinned()[canonical(req.name)]), (req, pinned()[canonical(req.name)])
    assert set(extras()) == {"client", "worker", "server", "all", "otel"}
    assert [str(req) for req in extras()["all"]] == ["quorra[client,server,worker]"]


def test_setup_cfg_ships_every_package_of_the_source_tree():
    listed = set(setup_cfg()["options"]["packages"].split())
    found = {
        ".".join(path.parent.relative_to(REPO).parts)
        for path in (REPO / "quorra").rglob("__init__.py")
        if "__pycache__" not in path.parts
    }
    assert found <= listed, f"missing from setup.cfg's packages: {found - listed}"


def test_grpcio_and_protobuf_start_at_the_versions_the_generated_code_demands():
    generated_grpc = re.search(
        r"GRPC_GENERATED_VERSION = '([\d.]+)'", (REPO / "quorra/rpc/quorra_pb2_grpc.py").read_text()
    )
    protobuf = re.search(
        r"ValidateProtobufRuntimeVersion\(\s*_runtime_version\.Domain\.PUBLIC,\s*(\d+),\s*(\d+),\s*(\d+),",
        (REPO / "quorra/rpc/quorra_pb2.py").read_text(),
    )
    for extra in ("worker", "server"):
        by_name = {canonical(req.name): req for req in extras()[extra]}
        assert f">={generated_grpc.group(1)}" in str(by_name["grpcio"].specifier)
        assert f">={'.'.join(protobuf.groups())}" in str(by_name["protobuf"].specifier)


def distribution_closure(requirements: list[Requirement]) -> set[str]:
    """The installed distributions `requirements` pull in, transitively (markers evaluated)."""
    names: set[str] = set()
    done: set[tuple[str, frozenset[str]]] = set()
    todo = list(requirements)
    while todo:
        req = todo.pop()
        key = (canonical(req.name), frozenset(req.extras))
        if key in done:
            continue
        done.add(key)
        names.add(key[0])
        for line in metadata.requires(req.name) or []:
            sub = Requirement(line)
            if sub.marker is None or any(sub.marker.evaluate({"extra": extra}) for extra in req.extras or {""}):
                todo.append(sub)
    return names


# Tried and skipped when missing: grpc's __init__ probes its companions, mako (under
# alembic) pygments for highlighting, and httpx its command line (rich, pygments, beside
# click). A role never needs them.
OPTIONAL_PROBES = {"grpcio-tools", "grpcio-health-checking", "grpcio-reflection", "pygments", "rich"}


def distributions_loaded_by(*modules: str) -> set[str]:
    code = (
        "import json, sys\n"
        + "".join(f"import {module}\n" for module in modules)
        + "print(json.dumps(sorted({name.split('.')[0] for name in sys.modules})))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], check=False, cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    by_module = metadata.packages_distributions()
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    return {canonical(dist) for module in loaded for dist in by_module.get(module, [])} - {"quorra"}


@cache
def loaded_at_startup() -> set[str]:
    """What this environment's interpreter loads before any import (.pth hooks: setuptools')."""
    return distributions_loaded_by("json")


@pytest.mark.parametrize(
    ("extra", "modules"),
    [
        ("worker", ("quorra.worker", "quorra.worker.cli", "quorra.worker.examples", "quorra.metrics_endpoint")),
        ("client", ("quorra.cli.quorractl",)),
        (
            "server",
            ("quorra.api.server", "quorra.rpc.server", "quorra.scheduler", "quorra.migrate", "quorra.cli.admin"),
        ),
    ],
)
def test_each_extra_brings_every_library_its_role_imports(extra, modules):
    core = requirements_of("options", "install_requires")
    available = distribution_closure(core + extras()[extra])

    missing = distributions_loaded_by(*modules) - available - OPTIONAL_PROBES - loaded_at_startup()
    # quorra[otel] is optional by design: redis-py imports OpenTelemetry by itself when it is
    # installed, and its namespaces (opentelemetry, google) then map to all of its distributions.
    missing -= distribution_closure(extras()["otel"])
    assert not missing, f"quorra[{extra}] lacks {missing}"


# -- the Dockerfile and the image's Python layer ----------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]


def test_dockerfile_builds_in_two_stages_and_runs_quorra_as_a_user_without_pip_at_start():
    instructions = dockerfile_instructions()
    stages = [args for op, args in instructions if op == "FROM"]
    runtime = instructions[[i for i, (op, _) in enumerate(instructions) if op == "FROM"][-1] :]

    assert len(stages) == 2 and stages[0].endswith("AS build") and stages[1].endswith("AS runtime")
    assert "pip wheel --no-deps --wheel-dir /wheels ." in [args for op, args in instructions if op == "RUN"]
    [install] = [args for op, args in runtime if op == "RUN" and "python -m venv /opt/quorra" in args]
    assert "--no-index" in install and '"quorra[all,otel]"' in install and "quorra --version" in install
    assert not any("pip install -e" in args or "--editable" in args for _, args in instructions)
    [user] = [args for op, args in runtime if op == "USER"]
    assert user.split(":")[0].isdigit() and int(user.split(":")[0]) != 0
    assert dict(runtime)["ENTRYPOINT"] == '["quorra"]'
    assert_runs_quorra(json.loads(dict(runtime)["CMD"]), "Dockerfile CMD")
    assert set(dict(runtime)["EXPOSE"].split()) == {"8080", "50051", "9102"}
    for op, args in instructions:
        if op == "COPY" and "--from" not in args:
            for source in args.split()[:-1]:
                assert (REPO / source).exists(), f"the Dockerfile copies {source}, which is missing"


def test_the_image_python_layer_builds_a_wheel_that_runs_from_a_fresh_venv(tmp_path):
    # Given the wheel built as the Dockerfile's build stage builds it (offline here: no isolation)
    source, wheels, venv = tmp_path / "src", tmp_path / "wheels", tmp_path / "venv"
    source.mkdir()
    for name in ("setup.py", "setup.cfg", "README.md", "quorra", "migrations"):
        _copy(REPO / name, source / name)
    pip = [sys.executable, "-m", "pip", "--quiet", "--disable-pip-version-check"]
    _run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "--wheel-dir", str(wheels), str(source)])
    [wheel] = wheels.glob("quorra-*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    for init in (REPO / "quorra").rglob("__init__.py"):
        assert init.relative_to(REPO).as_posix() in shipped, f"the wheel lacks {init.parent.name}"
    # When it is installed into a fresh venv (its dependencies taken from this environment,
    # after the venv's own packages, instead of the image's pinned wheels)
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    _run([*pip, "--python", str(python), "install", "--no-deps", "--no-index", str(wheel)])
    purelib = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).strip())
    (purelib / "zz_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    # Then `quorra` runs from the venv, with its version, every role's subcommand and the typed marker
    env = {**os.environ, "PYTHONPATH": ""}
    version = _run([str(venv / "bin" / "quorra"), "--version"], env=env, cwd=tmp_path)
    assert version.strip() == f"quorra, version {metadata.version('quorra')}"
    help_text = _run([str(venv / "bin" / "quorra"), "--help"], env=env, cwd=tmp_path)
    assert all(role in help_text for role in (*ROLES, "migrate"))
    assert "--queues" in _run([str(venv / "bin" / "quorra"), "worker", "--help"], env=env, cwd=tmp_path)
    where = _run([str(python), "-c", "import quorra, quorra.migrations; print(quorra.__file__)"], env=env, cwd=tmp_path)
    assert Path(where.strip()).is_relative_to(venv)
    assert (Path(where.strip()).parent / "py.typed").exists()
    assert {"quorra", "quorractl", "quorra-worker"} <= {path.name for path in (venv / "bin").iterdir()}


def _copy(source: Path, target: Path) -> None:
    import shutil

    if source.is_dir():
        shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    else:
        shutil.copy2(source, target)


def _run(command: list[str], **kwargs: Any) -> str:
    done = subprocess.run(
        command, check=False, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT_SECONDS, **kwargs
    )
    assert done.returncode == 0, f"{command}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


# -- docker compose ---------------------------------------------------------------------------


@cache
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def interpolated(value: str) -> str:
    """Compose's ${NAME:-default} with every variable unset."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)


def test_the_top_level_compose_file_includes_the_one_in_deployments():
    assert yaml.safe_load((REPO / "docker-compose.yml").read_text()) == {"include": ["deployments/docker-compose.yml"]}


def test_compose_runs_every_role_from_the_dockerfile_after_healthy_databases_and_a_one_shot_migration():
    services = compose()["services"]

    assert set(services) == {"postgres", "redis", *QUORRA_SERVICES, "prometheus"}
    for name in ("postgres", "redis"):
        assert services[name]["healthcheck"]["test"][0] == "CMD"
    for name in QUORRA_SERVICES:
        service = services[name]
        assert (COMPOSE.parent / service["build"]["context"] / service["build"]["dockerfile"]).resolve() == (
            REPO / "Dockerfile"
        )
        assert_runs_quorra(service["command"], f"compose service {name}")
        assert "pip" not in json.dumps(service.get("command")) + json.dumps(service.get("entrypoint", ""))
        assert service["restart"] == ("no" if name == "migrate" else "unless-stopped")
    conditions = {
        name: {dep: spec["condition"] for dep, spec in services[name]["depends_on"].items()} for name in QUORRA_SERVICES
    }
    assert conditions["migrate"] == {"postgres": "service_healthy"}
    for name in ("web", "grpc", "scheduler"):
        assert conditions[name] == {
            "postgres": "service_healthy",
            "redis": "service_healthy",
            "migrate": "service_completed_successfully",
        }
    assert conditions["worker"] == {"grpc": "service_healthy"}
    assert services["worker"]["deploy"]["replicas"] == 2
    assert services["worker"]["environment"]["QUORRA_WORKER_QUEUES"] == "default,email,processing"
    assert services["worker"]["environment"]["QUORRA_GRPC_ADDR"] == "grpc:50051"


def test_compose_sets_only_variables_that_settings_reads():
    for name in QUORRA_SERVICES:
        environment = compose()["services"][name]["environment"]
        assert set(environment) <= settings_variables(), name
        Settings.from_env({key: interpolated(str(value)) for key, value in environment.items()})


def test_compose_gives_each_process_time_for_its_graceful_shutdown():
    services = compose()["services"]
    for name in ("web", "grpc", "scheduler", "worker"):
        environment = services[name]["environment"]
        grace = environment.get("QUORRA_WORKER_SHUTDOWN_GRACE" if name == "worker" else "QUORRA_SHUTDOWN_GRACE")
        assert parse_duration(services[name]["stop_grace_period"]) >= parse_duration(grace) + 5, name


def test_compose_ports_are_the_readme_ports_and_prometheus_scrapes_every_process_where_it_listens():
    services = compose()["services"]
    published = {name: [interpolated(port) for port in services[name].get("ports", [])] for name in services}
    readme = (REPO / "README.md").read_text()

    assert published["web"] == ["8080:8080"] and published["grpc"] == ["50051:50051"]
    assert published["postgres"] == ["5432:5432"] and published["redis"] == ["6379:6379"]
    for address in ("localhost:8080", "localhost:50051", "localhost:5432", "localhost:6379", ":9102", "localhost:9090"):
        assert address in readme, address
    listens = {
        "web": parse_address(services["web"]["environment"]["QUORRA_HTTP_ADDR"])[1],
        **{name: parse_address(services[name]["environment"]["QUORRA_METRICS_ADDR"])[1] for name in ROLES[1:]},
    }
    config = yaml.safe_load((DEPLOYMENTS / "prometheus.yml").read_text())
    scraped = {
        name: sd["port"] for job in config["scrape_configs"] for sd in job["dns_sd_configs"] for name in sd["names"]
    }
    assert scraped == listens
    mounted = services["prometheus"]["volumes"][0].split(":")
    assert (COMPOSE.parent / mounted[0]).resolve() == DEPLOYMENTS / "prometheus.yml"


# -- Procfile and Makefile -----------------------------------------------------------------------


def procfile() -> dict[str, str]:
    lines = (REPO / "Procfile").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line.strip() and not line.startswith("#"))


def test_every_procfile_line_runs_a_quorra_command():
    for name, command in procfile().items():
        words = shlex.split(command)
        assert words[0] == "exec", name
        argv = words[1:]
        if argv[0] == "env":
            argv = [word for word in argv[1:] if "=" not in word]
        assert_runs_quorra(argv, f"Procfile {name}")


@pytest.mark.parametrize(
    ("environ", "address"),
    [
        ({}, ":8080"),
        ({"PORT": "5555"}, ":5555"),
        ({"PORT": "5555", "QUORRA_HTTP_ADDR": "127.0.0.1:7000"}, "127.0.0.1:7000"),
    ],
)
def test_the_procfile_web_listens_on_port_when_a_host_sets_it(environ, address):
    command = procfile()["web"].replace("quorra web", "printenv QUORRA_HTTP_ADDR")
    done = subprocess.run(
        ["sh", "-c", command], check=False, env={"PATH": os.environ["PATH"], **environ}, capture_output=True, text=True
    )
    assert done.stdout.strip() == address


def test_make_run_pins_the_web_to_8080_whatever_port_honcho_hands_out():
    dry = _run(["make", "-n", "-s", "run"], cwd=REPO)
    assert "QUORRA_HTTP_ADDR=${QUORRA_HTTP_ADDR:-:8080}" in dry and "honcho start web grpc scheduler worker" in dry


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("build", "pip wheel --quiet --no-deps --wheel-dir dist ."),
        ("docker-build", "docker build -t quorra:dev ."),
        ("dev", "docker compose -f deployments/docker-compose.yml up --build --detach"),
        ("dev-down", "docker compose -f deployments/docker-compose.yml down"),
        ("db-init", "docker compose -f deployments/docker-compose.yml up --detach --wait postgres redis"),
        ("db-init", "DATABASE_URL=postgresql://quorra:quorra@localhost:5432/quorra .venv/bin/quorra migrate"),
    ],
)
def test_goquorras_make_targets_do_the_real_thing(target, expected):
    assert expected in _run(["make", "-n", target], cwd=REPO)


# -- Kubernetes manifests and the Helm chart -----------------------------------------------------


def k8s_manifests() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert set(kustomization["resources"]) == {path.name for path in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    return [document for name in kustomization["resources"] for document in load_yaml_documents(K8S / name)]


def render_chart(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    with helm.Chart.load(str(CHART)) as chart:
        rendered = chart.render(values or {}, name="quorra", namespace="quorra")
    return [
        document
        for path, text in sorted(rendered.items())
        if path.endswith(".yaml")
        for document in yaml.safe_load_all(text)
        if document
    ]


CHART_VARIANTS = {
    "defaults": {},
    "monitoring and an existing secret": {
        "existingSecret": "quorra-credentials",
        "metrics": {"serviceMonitor": {"enabled": True}},
        "redis": {"url": "redis://redis:6379/0"},
        "worker": {"replicas": 5, "handlers": "myapp.jobs"},
        "config": {"workerShutdownGraceSeconds": 120, "extraEnv": {"QUORRA_RETENTION": "3d"}},
    },
}


def all_manifests() -> dict[str, list[dict[str, Any]]]:
    return {
        "k8s": k8s_manifests(),
        **{f"chart, {name}": render_chart(values) for name, values in CHART_VARIANTS.items()},
    }


def test_the_chart_lints_clean():
    assert helm.lint(str(CHART))["errors"] == []


@pytest.mark.parametrize("source", ["k8s", *(f"chart, {name}" for name in CHART_VARIANTS)])
def test_every_manifest_is_valid_against_the_kubernetes_schemas(source):
    for manifest in all_manifests()[source]:
        if manifest["kind"] == "ServiceMonitor":  # a CRD: checked by hand below
            assert manifest["apiVersion"] == "monitoring.coreos.com/v1"
            continue
        kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)


def by_kind(manifests: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {
        m["metadata"]["labels"].get("app.kubernetes.io/component", m["metadata"]["name"]): m
        for m in manifests
        if m["kind"] == kind
    }


def test_the_chart_renders_the_same_objects_as_the_plain_manifests():
    def shape(manifests):
        return sorted((m["kind"], m["metadata"]["name"].removeprefix("quorra")) for m in manifests)

    assert shape(render_chart()) == shape(k8s_manifests())


REFERENCED = {"DATABASE_URL": "postgresql://from-a-secret/quorra"}


def container_environment(manifests: list[dict[str, Any]], pod_spec: dict[str, Any]) -> dict[str, str]:
    """What the pod's container sees: envFrom ConfigMap and Secret, then env (values or refs)."""
    [container] = pod_spec["containers"]
    objects = {(m["kind"], m["metadata"]["name"]): m for m in manifests}
    environment: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            environment |= objects[("ConfigMap", source["configMapRef"]["name"])]["data"]
        else:
            secret = objects.get(("Secret", source["secretRef"]["name"]))
            environment |= secret["stringData"] if secret else {"DATABASE_URL": "postgresql://from/existing"}
    for variable in container.get("env", []):
        environment[variable["name"]] = variable.get("value", REFERENCED.get(variable["name"], "from-a-reference"))
    return environment


@pytest.mark.parametrize("source", ["k8s", *(f"chart, {name}" for name in CHART_VARIANTS)])
def test_every_pod_runs_a_quorra_command_with_settings_that_settings_reads(source):
    manifests = all_manifests()[source]
    pods = {**by_kind(manifests, "Deployment"), **by_kind(manifests, "Job")}

    assert set(pods) == set(QUORRA_SERVICES)
    for role, workload in pods.items():
        pod = workload["spec"]["template"]["spec"]
        [container] = pod["containers"]
        assert_runs_quorra(container["args"], f"{source}: {role}")
        environment = container_environment(manifests, pod)
        assert set(environment) <= settings_variables(), (role, set(environment) - settings_variables())
        settings = Settings.from_env(environment)
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert container["resources"]["requests"].keys() == {"cpu", "memory"}
        if role == "migrate":
            continue
        grace = settings.worker_shutdown_grace_seconds if role == "worker" else settings.shutdown_grace_seconds
        assert pod["terminationGracePeriodSeconds"] == grace + TERMINATION_MARGIN_SECONDS, (source, role)


@pytest.mark.parametrize("source", ["k8s", *(f"chart, {name}" for name in CHART_VARIANTS)])
def test_probes_use_healthz_readyz_the_grpc_health_service_and_the_metrics_ports(source):
    manifests = all_manifests()[source]
    containers = {
        role: d["spec"]["template"]["spec"]["containers"][0] for role, d in by_kind(manifests, "Deployment").items()
    }
    ports = {role: {p["name"]: p["containerPort"] for p in c["ports"]} for role, c in containers.items()}

    assert containers["web"]["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert containers["web"]["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert containers["grpc"]["readinessProbe"]["grpc"] == {"port": ports["grpc"]["grpc"]}
    for role in ("scheduler", "worker"):
        assert containers[role]["livenessProbe"]["httpGet"] == {"path": "/metrics", "port": "metrics"}
    assert ports["web"] == {"http": 8080} and ports["grpc"] == {"grpc": 50051, "metrics": 9102}
    environment = {
        role: container_environment(manifests, d["spec"]["template"]["spec"])
        for role, d in by_kind(manifests, "Deployment").items()
    }
    assert parse_address(environment["web"]["QUORRA_HTTP_ADDR"])[1] == ports["web"]["http"]
    assert parse_address(environment["grpc"]["QUORRA_GRPC_ADDR"])[1] == ports["grpc"]["grpc"]
    for role in ("grpc", "scheduler", "worker"):
        assert parse_address(environment[role]["QUORRA_METRICS_ADDR"])[1] == ports[role]["metrics"]
    grpc_service = by_kind(manifests, "Service")["grpc"]
    assert environment["worker"]["QUORRA_GRPC_ADDR"] == f"{grpc_service['metadata']['name']}:50051"


@pytest.mark.parametrize("source", ["k8s", *(f"chart, {name}" for name in CHART_VARIANTS)])
def test_services_select_their_pods_and_a_budget_guards_the_workers(source):
    manifests = all_manifests()[source]
    deployments = by_kind(manifests, "Deployment")

    for service in (m for m in manifests if m["kind"] == "Service"):
        role = service["metadata"]["labels"]["app.kubernetes.io/component"]
        pod = deployments[role]["spec"]["template"]
        assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
        named_ports = {p["name"] for p in pod["spec"]["containers"][0]["ports"]}
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= named_ports
    [budget] = [m for m in manifests if m["kind"] == "PodDisruptionBudget"]
    assert budget["spec"]["selector"]["matchLabels"] == deployments["worker"]["spec"]["selector"]["matchLabels"]
    assert budget["spec"]["maxUnavailable"] == 1


def test_chart_values_reach_the_objects():
    values = CHART_VARIANTS["monitoring and an existing secret"]
    manifests = render_chart(values)
    deployments = by_kind(manifests, "Deployment")

    assert not [m for m in manifests if m["kind"] == "Secret"]
    worker_pod = deployments["worker"]["spec"]["template"]["spec"]
    assert deployments["worker"]["spec"]["replicas"] == 5
    assert worker_pod["terminationGracePeriodSeconds"] == 125
    [config] = [m for m in manifests if m["kind"] == "ConfigMap"]
    assert config["data"]["QUORRA_WORKER_HANDLERS"] == "myapp.jobs"
    assert config["data"]["QUORRA_RETENTION"] == "3d"
    assert config["data"]["QUORRA_WORKER_SHUTDOWN_GRACE"] == "120s"
    refs = json.dumps(manifests)
    assert '"name": "quorra-credentials"' in refs
    [monitor] = [m for m in manifests if m["kind"] == "ServiceMonitor"]
    assert {endpoint["port"] for endpoint in monitor["spec"]["endpoints"]} == {"http", "metrics"}
    assert monitor["spec"]["selector"]["matchLabels"].items() <= deployments["web"]["metadata"]["labels"].items()
    [job] = [m for m in manifests if m["kind"] == "Job"]
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    image = {c["image"] for d in deployments.values() for c in d["spec"]["template"]["spec"]["containers"]}
    assert image == {f"quorra:{metadata.version('quorra')}"}


def test_the_chart_secret_holds_the_urls_and_key_and_no_redis_url_when_none_is_given():
    [secret] = [m for m in render_chart() if m["kind"] == "Secret"]
    assert set(secret["stringData"]) == {"DATABASE_URL", "QUORRA_API_KEY"}
    [secret] = [m for m in render_chart({"redis": {"url": "redis://r:6379/0"}}) if m["kind"] == "Secret"]
    assert secret["stringData"]["REDIS_URL"] == "redis://r:6379/0"
