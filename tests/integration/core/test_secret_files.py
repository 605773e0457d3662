"""Generated keys: created whole with mode 0600 by whichever process is first, never empty."""

from __future__ import annotations

import multiprocessing
import stat
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import SecretStr, ValidationError

from ragledger.core.secret_files import SecretFileError, read_or_create_secret
from ragledger.core.settings import Settings
from ragledger.services.signing import DigestSigner

STARTS = 20


def _start(data_dir: str, barrier: multiprocessing.synchronize.Barrier, out) -> None:  # type: ignore[name-defined]
    """One process starting: both generated keys, as the app loads them."""
    barrier.wait()
    try:
        secret = Settings(data_dir=Path(data_dir)).resolved_secret_key()
        key_id = DigestSigner.load(Path(data_dir)).key_id
        out.put((secret, key_id))
    except Exception as exc:  # noqa: BLE001 - reported to the test, which fails on it
        out.put(("error", repr(exc)))


def _modes(data_dir: Path) -> dict[str, int]:
    return {p.name: stat.S_IMODE(p.stat().st_mode) for p in data_dir.iterdir()}


# fork() from a process with threads warns: a child could inherit a lock some thread
# held. These children only read and write key files; a fork server or spawn staggered
# the starts so much that the old code's race went unseen in 5 rounds (fork: 2 of 5).
@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
@pytest.mark.parametrize("round_", range(5))
def test_concurrent_processes_all_read_the_same_non_empty_keys(tmp_path: Path, round_) -> None:
    # Forked: each child starts at once with everything imported, which makes the race
    # as tight as the barrier can (spawned children took seconds each to import).
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(STARTS)
    out = context.Queue()
    data_dir = tmp_path / f"data-{round_}"
    processes = [
        context.Process(target=_start, args=(str(data_dir), barrier, out)) for _ in range(STARTS)
    ]
    for process in processes:
        process.start()
    results = [out.get(timeout=300) for _ in processes]
    for process in processes:
        process.join(timeout=60)
    errors = [r for r in results if r[0] == "error"]
    assert errors == []
    assert len(set(results)) == 1
    secret, key_id = results[0]
    assert len(secret) >= 32
    assert key_id
    # Only the two keys are left (no temporary files), readable by their owner alone.
    assert _modes(data_dir) == {"secret_key": 0o600, "signing_key.pem": 0o600}


def test_concurrent_threads_all_read_the_same_key(tmp_path: Path) -> None:
    barrier = threading.Barrier(STARTS)
    path = tmp_path / "key"

    def start(_: int) -> bytes:
        barrier.wait()
        return read_or_create_secret(
            path,
            lambda: Ed25519PrivateKey.generate().private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )

    with ThreadPoolExecutor(STARTS) as pool:
        keys = set(pool.map(start, range(STARTS)))
    assert len(keys) == 1
    assert keys == {path.read_bytes()}
    assert _modes(tmp_path) == {"key": 0o600}


def test_an_empty_key_file_is_refused_not_used(tmp_path: Path) -> None:
    (tmp_path / "signing_key.pem").write_bytes(b"")
    with pytest.raises(SecretFileError, match=r"signing_key\.pem is empty"):
        DigestSigner.load(tmp_path)
    (tmp_path / "secret_key").write_text("\n")
    with pytest.raises(SecretFileError, match="secret_key is empty"):
        Settings(data_dir=tmp_path).resolved_secret_key()


def test_an_empty_signing_key_setting_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="SIGNING_KEY is empty"):
        Settings(data_dir=tmp_path, signing_key=SecretStr(""))


def test_the_signing_key_can_come_from_its_own_file(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    secret_file = tmp_path / "secrets" / "signing.pem"
    secret_file.parent.mkdir()
    secret_file.write_bytes(pem)
    data_dir = tmp_path / "data"
    settings = Settings(data_dir=data_dir, signing_key_file=secret_file)
    signer = DigestSigner.from_settings(settings)
    assert signer.public_key_b64() == DigestSigner.load(tmp_path, pem.decode()).public_key_b64()
    # Nothing was generated beside the data: the key lives only where the operator put it.
    assert not (data_dir / "signing_key.pem").exists()

    with pytest.raises(SecretFileError, match="does not exist"):
        DigestSigner.from_settings(
            Settings(data_dir=data_dir, signing_key_file=tmp_path / "missing.pem")
        )
    with pytest.raises(ValidationError, match="not both"):
        Settings(
            data_dir=data_dir, signing_key_file=secret_file, signing_key=SecretStr(pem.decode())
        )
    (tmp_path / "not-a-key.pem").write_text("hello")
    with pytest.raises(ValueError, match="not a PEM private key"):
        DigestSigner.load(data_dir, key_file=tmp_path / "not-a-key.pem")
