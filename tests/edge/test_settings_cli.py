"""Settings from the environment and the command line; clear refusals of what cannot work."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import ValidationError

from edge_agent.__main__ import build_parser, main, settings_from_args
from edge_agent.settings import EdgeSettings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    import os

    for k in list(os.environ):
        if k.startswith("EDGE_"):
            monkeypatch.delenv(k)


def test_environment_with_prefix(monkeypatch):
    monkeypatch.setenv("EDGE_TOKEN", "t0")
    monkeypatch.setenv("EDGE_SERVER", "server:9000")
    monkeypatch.setenv("EDGE_CAMERAS", '[{"id": "a", "source": "a.avi"}, {"id": "b", "source": "0", "token": "tb"}]')
    monkeypatch.setenv("EDGE_SAMPLE_FPS", "5")
    s = EdgeSettings()
    assert s.server == "server:9000" and s.sample_fps == 5.0
    assert [c.id for c in s.cameras] == ["a", "b"]
    assert s.token_for(s.cameras[0]) == "t0" and s.token_for(s.cameras[1]) == "tb"
    assert "t0" not in repr(s)  # secrets stay out of logs


def test_unknown_setting_is_an_error(monkeypatch):
    monkeypatch.setenv("EDGE_SAMPLE_FSP", "5")
    with pytest.raises(ValidationError, match="EDGE_SAMPLE_FSP"):
        EdgeSettings()


def test_a_camera_without_token_is_refused():
    with pytest.raises(ValidationError, match="no token"):
        EdgeSettings(cameras=[{"id": "a", "source": "x"}])


@pytest.mark.parametrize("bad", ["", "a b", "../etc", "x" * 65])
def test_camera_ids_are_checked(bad):
    with pytest.raises(ValidationError):
        EdgeSettings(token="t", cameras=[{"id": bad, "source": "x"}])


def test_command_line_wins_over_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("EDGE_SERVER", "env:1")
    monkeypatch.setenv("EDGE_SAMPLE_FPS", "1")
    token = tmp_path / "token"
    token.write_text("from-file\n")
    args = build_parser().parse_args(["--source", "a.avi", "--camera-id", "a", "--source", "rtsp://x/y",
                                      "--camera-id", "b", "--server", "cli:2", "--token-file", str(token),
                                      "--interval", "3", "--exit-when-done"])
    s = settings_from_args(args)
    assert s.server == "cli:2" and s.sample_fps == 1.0 and s.tracking.interval_s == 3.0 and s.exit_when_done
    assert [(c.id, c.source) for c in s.cameras] == [("a", "a.avi"), ("b", "rtsp://x/y")]
    assert s.token_for(s.cameras[1]) == "from-file"


def test_usage_errors_exit_2_with_a_message(capsys):
    assert main(["--source", "a.avi"]) == 2
    assert "one --camera-id per --source" in capsys.readouterr().err
    assert main(["--source", "a.avi", "--camera-id", "a"]) == 2
    assert "no token" in capsys.readouterr().err
    assert main(["--token", "t"]) == 2
    assert "no camera configured" in capsys.readouterr().err


def test_python_dash_m_help():
    out = subprocess.run([sys.executable, "-m", "edge_agent", "--help"], capture_output=True, text=True, check=True)
    assert "--source" in out.stdout and "--camera-id" in out.stdout and "--server" in out.stdout
