"""Signing keys kept in a PKCS#11 token (an HSM, or SoftHSM2 in tests and demos).

:class:`Pkcs11KeyStore` generates EC key pairs inside the token; the private half is sensitive
and not extractable, so it never leaves the token and nothing here can export it.
:class:`Pkcs11Key` signs by hashing with SHA-256 in Python and having the token sign the digest
with raw ``CKM_ECDSA`` (SoftHSM2 offers no ``CKM_ECDSA_SHA256``); the result is DER-encoded like
every other metrocloud signature.

How PKCS#11 behaves in one process, and what this module does about it:

- A module is loaded and initialised (``C_Initialize``) once per process; SoftHSM2 reads
  ``SOFTHSM2_CONF`` and scans its token directory at that moment. Tokens created later (for
  example by ``softhsm2-util``) stay invisible to this process, so set ``SOFTHSM2_CONF`` and
  create the tokens first. The module is loaded by its real path, so that two spellings of
  one file (``/usr/lib/softhsm/libsofthsm2.so`` is a symlink) do not initialise it twice.
- The login state is shared by every session of a process on a token, and closing a logged-in
  session logs them all out. So all stores of this process on one token share one logged-in
  session, which is closed when the last of them closes; a second store must give the PIN the
  first one logged in with.
- python-pkcs11 initialises the module without locking arguments, which tells SoftHSM2 that
  the application never calls it from two threads at once. So every call into one module goes
  through one lock, shared by all its stores and keys.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import shutil
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import pkcs11
from asn1crypto.core import OctetString
from asn1crypto.keys import ECDomainParameters
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from pkcs11 import Attribute, KeyType, Mechanism, MechanismFlag, ObjectClass
from pkcs11.exceptions import (
    MultipleObjectsReturned,
    MultipleTokensReturned,
    NoSuchToken,
    PinIncorrect,
    PinInvalid,
    PinLenRange,
    PinLocked,
    PKCS11Error,
    UserAlreadyLoggedIn,
    UserPinNotInitialized,
)
from pkcs11.util.ec import encode_named_curve_parameters

from metrocloud.core.errors import ConfigurationError
from metrocloud.pki.keys import Curve, PublicKey

if TYPE_CHECKING:
    from metrocloud.pki.keys import KeyStore, SigningKey

MODULE_ENV = "METROCLOUD_PKCS11_MODULE"
"""Environment variable naming the PKCS#11 module (a shared library) to use."""

SOFTHSM2_MODULE_PATHS: tuple[Path, ...] = (
    Path("/usr/lib/softhsm/libsofthsm2.so"),
    Path("/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so"),
    Path("/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so"),
    Path("/usr/local/lib/softhsm/libsofthsm2.so"),
)
"""Where Debian, Ubuntu and a source build put the SoftHSM2 module, tried in order."""

_INSTALL_HINT = "install the Debian package softhsm2 (apt-get install softhsm2)"


class TokenError(ConfigurationError):
    """A PKCS#11 module, token or key cannot be used (not found, wrong PIN, store closed...)."""


def find_pkcs11_module() -> Path:
    """The PKCS#11 module to use: ``$METROCLOUD_PKCS11_MODULE``, else SoftHSM2's.

    Raises :class:`~metrocloud.core.errors.ConfigurationError` if the variable names a missing
    file, or if it is unset and SoftHSM2 is not installed.
    """
    configured = os.environ.get(MODULE_ENV)
    if configured:
        path = Path(configured)
        if not path.is_file():
            raise ConfigurationError(f"{MODULE_ENV}={configured}: no such file")
        return path
    for path in SOFTHSM2_MODULE_PATHS:
        if path.is_file():
            return path
    tried = ", ".join(str(p) for p in SOFTHSM2_MODULE_PATHS)
    raise ConfigurationError(
        f"no PKCS#11 module found (tried {tried}): {_INSTALL_HINT}, or set {MODULE_ENV} "
        "to the module of your HSM"
    )


def init_softhsm_token(conf_dir: Path, label: str, user_pin: str, so_pin: str) -> Path:
    """Create a SoftHSM2 token labelled ``label`` under ``conf_dir``; return the config path.

    Writes ``conf_dir/softhsm2.conf`` (tokens in ``conf_dir/tokens``) and runs
    ``softhsm2-util --init-token``. Several tokens may share one ``conf_dir``. Set
    ``SOFTHSM2_CONF`` to the returned path before this process first loads the module: tokens
    created after that are not seen until the process restarts. PINs are passed on the command
    line, so this is for tests and demos only. ``FileExistsError`` if the label is taken.
    """
    util = shutil.which("softhsm2-util")
    if util is None:
        raise ConfigurationError(f"softhsm2-util not found on PATH: {_INSTALL_HINT}")
    conf_dir = conf_dir.resolve()
    token_dir = conf_dir / "tokens"
    token_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    conf = conf_dir / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {token_dir}\nobjectstore.backend = file\nlog.level = ERROR\n"
    )
    env = dict(os.environ, SOFTHSM2_CONF=str(conf))

    def run(*args: str) -> str:
        proc = subprocess.run(
            [util, *args], env=env, capture_output=True, text=True, check=False, timeout=60
        )
        if proc.returncode != 0:
            detail = (proc.stderr or proc.stdout).strip()
            raise ConfigurationError(f"softhsm2-util {args[0]} failed: {detail}")
        return proc.stdout

    labels = [
        line.split(":", 1)[1].strip()
        for line in run("--show-slots").splitlines()
        if line.strip().startswith("Label:")
    ]
    if label in labels:
        raise FileExistsError(f"a SoftHSM2 token labelled {label!r} exists in {token_dir}")
    run(
        "--init-token", "--free", "--label", label, "--pin", user_pin, "--so-pin", so_pin
    )  # fmt: skip
    return conf


# -- the module and the shared sessions ----------------------------------------------------------


@dataclass
class _Module:
    lib: Any  # pkcs11.lib (a Cython class)
    lock: threading.Lock


@dataclass
class _TokenSession:
    """The one logged-in session of this process on one token, shared by its stores."""

    module: _Module
    session: Any  # pkcs11.Session
    pin_digest: bytes | None  # None: found logged in by other code, the PIN was not checked
    users: int = 1


_registry_lock = threading.Lock()
_modules: dict[str, _Module] = {}
_sessions: dict[tuple[str, int], _TokenSession] = {}


def _pin_digest(pin: str) -> bytes:
    return hashlib.sha256(pin.encode()).digest()


def _load_module(path: str) -> _Module:
    """The initialised module at ``path`` (a real path); call with ``_registry_lock`` held."""
    module = _modules.get(path)
    if module is not None:
        return module
    # Reuse a lib object that other code loaded under another spelling of the same file:
    # loading it again would fail (the module is initialised once per process).
    loaded: dict[str, Any] = getattr(pkcs11, "_loaded", {})
    so = next((s for s in loaded if os.path.realpath(s) == path), path)
    try:
        lib = pkcs11.lib(so)
    except PKCS11Error as exc:
        if "while loading" in str(exc):
            raise TokenError(f"cannot load the PKCS#11 module {path}: {exc}") from None
        hint = ""
        if "softhsm" in path.lower():
            conf = os.environ.get("SOFTHSM2_CONF", "/etc/softhsm/softhsm2.conf (default)")
            hint = (
                f"; SoftHSM2 reads SOFTHSM2_CONF={conf}: the file and its "
                "directories.tokendir must exist and be readable"
            )
        raise TokenError(
            f"the PKCS#11 module {path} failed to initialise ({type(exc).__name__}: {exc}){hint}"
        ) from None
    module = _modules[path] = _Module(lib, threading.Lock())
    return module


def _token_labels(lib: Any) -> list[str]:
    try:
        return [slot.get_token().label for slot in lib.get_slots(token_present=True)]
    except PKCS11Error:
        return []


def _open_token(path: str, label: str, user_pin: str) -> tuple[tuple[str, int], _TokenSession]:
    """Join or open the logged-in session on token ``label``; translate every failure."""
    with _registry_lock:
        module = _load_module(path)
        with module.lock:
            try:
                token = module.lib.get_token(token_label=label)
            except NoSuchToken:
                labels = [x for x in _token_labels(module.lib) if x]
                conf = os.environ.get("SOFTHSM2_CONF", "unset")
                raise TokenError(
                    f"no token labelled {label!r} in {path} (tokens: {labels or 'none'}). "
                    f"For SoftHSM2 (SOFTHSM2_CONF={conf}), create it with softhsm2-util "
                    f"--init-token --free --label {label} before this process first loads the "
                    "module: tokens created later are not seen until the process restarts"
                ) from None
            except MultipleTokensReturned:
                raise TokenError(f"several tokens are labelled {label!r} in {path}") from None
            except PKCS11Error as exc:
                raise TokenError(
                    f"cannot list the tokens of {path}: {type(exc).__name__} {exc}"
                ) from None
            key = (path, int(token.slot.slot_id))
            shared = _sessions.get(key)
            if shared is not None:
                if shared.pin_digest is not None and not hmac.compare_digest(
                    shared.pin_digest, _pin_digest(user_pin)
                ):
                    raise TokenError(f"wrong user PIN for token {label!r}")
                shared.users += 1
                return key, shared
            digest: bytes | None = _pin_digest(user_pin)
            try:
                session = token.open(rw=True, user_pin=user_pin)
            except (PinIncorrect, PinInvalid, PinLenRange):
                raise TokenError(f"wrong user PIN for token {label!r}") from None
            except PinLocked:
                raise TokenError(f"the user PIN of token {label!r} is locked") from None
            except UserPinNotInitialized:
                raise TokenError(f"token {label!r} has no user PIN set") from None
            except UserAlreadyLoggedIn:
                # Other code of this process is logged in: a plain session shares that login,
                # and closing it will not log the other code out. The PIN cannot be checked.
                session = token.open(rw=True)
                digest = None
            except PKCS11Error as exc:
                raise TokenError(
                    f"cannot open a session on token {label!r}: {type(exc).__name__} {exc}"
                ) from None
            shared = _sessions[key] = _TokenSession(module, session, digest)
            return key, shared


def _release_token(key: tuple[str, int]) -> None:
    with _registry_lock:
        shared = _sessions[key]
        shared.users -= 1
        if shared.users:
            return
        del _sessions[key]
        # the session is gone either way if this fails (token removed, module finalised)
        with shared.module.lock, contextlib.suppress(PKCS11Error):
            shared.session.close()


# -- the store and its keys ----------------------------------------------------------------------


def _curve_of(ec_params: bytes) -> Curve:
    """The :class:`Curve` named by a DER ``ECParameters`` (CKA_EC_PARAMS)."""
    params = ECDomainParameters.load(ec_params)
    if params.name != "named":
        raise TokenError("the key's EC parameters are explicit, not a named curve")
    oid = params.chosen.dotted
    for curve in Curve:
        if curve.oid == oid:
            return curve
    raise TokenError(f"the key's curve {oid} is not allowed (only P-256 and brainpoolP256r1)")


def _ec_point(value: bytes, curve: Curve) -> bytes:
    """The encoded point from CKA_EC_POINT, which is DER-wrapped (spec) or raw (some tokens)."""
    raw_size = 1 + 2 * ((curve.ec_curve.key_size + 7) // 8)
    if len(value) == raw_size and value[0] == 0x04:
        return value
    try:
        point: bytes = OctetString.load(value).native
    except ValueError:
        raise TokenError("the key's CKA_EC_POINT is neither a point nor a DER one") from None
    return point


def _public_key(public: Any) -> tuple[Curve, PublicKey]:
    """Curve and public key of a python-pkcs11 EC public key object (reads the token)."""
    curve = _curve_of(bytes(public[Attribute.EC_PARAMS]))
    point = _ec_point(bytes(public[Attribute.EC_POINT]), curve)
    try:
        return curve, ec.EllipticCurvePublicKey.from_encoded_point(curve.ec_curve, point)
    except ValueError:
        raise TokenError(f"the key's CKA_EC_POINT is not a point on {curve.value}") from None


class Pkcs11Key:
    """A :class:`~metrocloud.pki.keys.SigningKey` whose private key stays in a PKCS#11 token."""

    def __init__(
        self, store: Pkcs11KeyStore, name: str, private: Any, curve: Curve, public: PublicKey
    ) -> None:
        self._store = store
        self._name = name
        self._private = private  # a python-pkcs11 PrivateKey, used under the module lock only
        self._curve = curve
        self._public = public

    @property
    def name(self) -> str:
        return self._name

    @property
    def curve(self) -> Curve:
        return self._curve

    def public_key(self) -> PublicKey:
        return self._public

    def sign(self, data: bytes) -> bytes:
        """ECDSA over SHA-256(``data``), DER-encoded; the token signs the digest."""
        digest = hashes.Hash(hashes.SHA256())
        digest.update(data)
        raw: bytes = self._store._call(
            self._private.sign, digest.finalize(), mechanism=Mechanism.ECDSA
        )
        half = len(raw) // 2
        r, s = int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big")
        return encode_dss_signature(r, s)

    def __repr__(self) -> str:
        return f"Pkcs11Key({self._name!r}, {self._curve.value}, token={self._store.token_label!r})"


class Pkcs11KeyStore:
    """EC signing keys in a PKCS#11 token, by label.

    Opens (or joins, see the module notes) a logged-in read/write session on the token labelled
    ``token_label``. Every failure a person can fix (module missing, token not found, wrong
    PIN) raises :class:`TokenError`, a :class:`~metrocloud.core.errors.ConfigurationError`.
    Use it as a context manager or call :meth:`close`; its keys stop working once it is closed.
    """

    def __init__(self, module: Path | str, token_label: str, user_pin: str) -> None:
        self.module = Path(os.path.realpath(module))
        self.token_label = token_label
        if not self.module.is_file():
            raise TokenError(f"the PKCS#11 module {module} does not exist")
        self._key, self._shared = _open_token(str(self.module), token_label, user_pin)
        self._closed = False

    # every call into the module goes through here
    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        with self._shared.module.lock:
            if self._closed:
                raise TokenError(f"the key store on token {self.token_label!r} is closed")
            try:
                return fn(*args, **kwargs)
            except PKCS11Error as exc:
                raise TokenError(
                    f"token {self.token_label!r}: {type(exc).__name__} {exc}".rstrip()
                ) from exc

    def _find(self, object_class: ObjectClass, label: str | None, id_: bytes | None) -> Any:
        """The single EC key of this class and label or id, or None."""
        attrs: dict[Attribute, Any] = {
            Attribute.CLASS: object_class,
            Attribute.KEY_TYPE: KeyType.EC,
        }
        if label is not None:
            attrs[Attribute.LABEL] = label
        if id_ is not None:
            attrs[Attribute.ID] = id_
        found = list(self._shared.session.get_objects(attrs))
        if len(found) > 1:
            raise MultipleObjectsReturned(f"{len(found)} objects match {attrs}")
        return found[0] if found else None

    def exists(self, name: str) -> bool:
        return self._call(self._find, ObjectClass.PRIVATE_KEY, name, None) is not None

    def generate(self, name: str, curve: Curve) -> Pkcs11Key:
        """A new key pair in the token, labelled ``name``; ``FileExistsError`` if taken."""
        if not name:
            raise ValueError("a key name must not be empty")
        curve = Curve(curve)
        private, got, public = self._call(self._generate, name, curve)
        if got is not curve:
            raise TokenError(
                f"token {self.token_label!r} made a {got.value} key, not {curve.value}"
            )
        return Pkcs11Key(self, name, private, curve, public)

    def _generate(self, name: str, curve: Curve) -> tuple[Any, Curve, PublicKey]:
        session = self._shared.session
        if next(iter(session.get_objects({Attribute.LABEL: name})), None) is not None:
            raise FileExistsError(f"a key labelled {name!r} exists in token {self.token_label!r}")
        public, private = session.generate_keypair(
            KeyType.EC,
            id=os.urandom(16),
            label=name,
            store=True,
            capabilities=MechanismFlag.SIGN | MechanismFlag.VERIFY,
            public_template={
                Attribute.EC_PARAMS: encode_named_curve_parameters(curve.oid),
                Attribute.PRIVATE: False,
            },
            private_template={
                Attribute.TOKEN: True,
                Attribute.SENSITIVE: True,
                Attribute.EXTRACTABLE: False,
                Attribute.SIGN: True,
            },
        )
        return (private, *_public_key(public))

    def load(self, name: str) -> Pkcs11Key:
        """The key labelled ``name``; ``KeyError`` if the token has none."""
        private, curve, public = self._call(self._load, name)
        return Pkcs11Key(self, name, private, curve, public)

    def _load(self, name: str) -> tuple[Any, Curve, PublicKey]:
        private = self._find(ObjectClass.PRIVATE_KEY, name, None)
        if private is None:
            raise KeyError(f"no key labelled {name!r} in token {self.token_label!r}")
        id_ = bytes(private[Attribute.ID])
        public = self._find(ObjectClass.PUBLIC_KEY, None, id_) if id_ else None
        if public is None:
            public = self._find(ObjectClass.PUBLIC_KEY, name, None)
        if public is None:
            raise TokenError(f"key {name!r} in token {self.token_label!r} has no public key object")
        return (private, *_public_key(public))

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Leave the token session (the last store to leave closes it); idempotent."""
        with self._shared.module.lock:
            if self._closed:
                return
            self._closed = True
        _release_token(self._key)

    def __enter__(self) -> Pkcs11KeyStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = ", closed" if self._closed else ""
        return f"Pkcs11KeyStore({str(self.module)!r}, {self.token_label!r}{state})"


if TYPE_CHECKING:

    def _conforms(store: Pkcs11KeyStore, key: Pkcs11Key) -> tuple[KeyStore, SigningKey]:
        return store, key
