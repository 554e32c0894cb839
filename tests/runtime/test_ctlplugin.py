"""The base config's supervisorctl plugin: ``supervisorctl -c supervisord.conf`` at the repository
root reaches the run directory's supervisord (``supervise/_ctlplugin.py``); with real supervisord
in ``test_supervisord.py``."""

from __future__ import annotations

import configparser
import socket
from pathlib import Path

from alphapulse.supervise._ctlplugin import server_url
from alphapulse.supervise._supervisor import BASE_CONFIG, run_dir_config

REPOSITORY = Path(__file__).resolve().parents[2]


def test_the_base_config_read_where_nothing_listens_names_the_run_directory_s_socket(tmp_path) -> None:
    here = str(tmp_path)
    named = f"unix://{here}/supervisor.sock"
    env = {"ALPHAPULSE_RUN_DIR": "/srv/ap", "XDG_RUNTIME_DIR": "/run/user/7", "HOME": "/home/q"}
    assert server_url(named, here, env) == "unix:///srv/ap/supervisor.sock"
    assert server_url(named, here, {"XDG_RUNTIME_DIR": "/run/user/7", "HOME": "/home/q"}) == (
        "unix:///run/user/7/alphapulse/supervisor.sock")
    assert server_url(named, here, {"HOME": "/home/q"}) == "unix:///home/q/.alphapulse/run/supervisor.sock"


def test_a_run_directory_s_own_config_and_a_url_given_with_s_keep_what_they_name(tmp_path) -> None:
    here = str(tmp_path)
    env = {"ALPHAPULSE_RUN_DIR": "/srv/ap"}
    assert server_url("unix:///tmp/other.sock", here, env) == "unix:///tmp/other.sock"  # supervisorctl -s
    assert server_url("http://127.0.0.1:9001", here, env) == "http://127.0.0.1:9001"
    with socket.socket(socket.AF_UNIX) as listening:  # a supervisord runs beside this config
        listening.bind(str(tmp_path / "supervisor.sock"))
        named = f"unix://{here}/supervisor.sock"
        assert server_url(named, here, env) == named


def test_the_repository_root_config_is_the_base_and_its_copy_leaves_the_plugin_out() -> None:
    assert (REPOSITORY / "supervisord.conf").read_bytes() == BASE_CONFIG.read_bytes()
    base, copy = configparser.ConfigParser(interpolation=None), configparser.ConfigParser(interpolation=None)
    base.read_string(BASE_CONFIG.read_text())
    copy.read_string(run_dir_config(BASE_CONFIG.read_text()))
    assert base.get("ctlplugin:alphapulse", "supervisor.ctl_factory") == (
        "alphapulse.supervise._ctlplugin:make_ctl_plugin")
    assert set(base.sections()) - set(copy.sections()) == {"ctlplugin:alphapulse"}
    assert all(dict(base[s]) == dict(copy[s]) for s in copy.sections())
