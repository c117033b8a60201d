"""Where an image's bytes come from, and the key that names them in the feature cache.

A manifest row's image is one of three things:

- a **local file** (a ``Path``): read with ``open``, keyed by its path, byte size and
  mtime (one ``stat``);
- an **object in a store** (a ``URL``: ``s3://``, ``gs://``, ``http(s)://`` or any other
  fsspec protocol): read through fsspec, keyed by its URL, ETag and size (one
  ``info()``, i.e. one HEAD, per object, in threads);
- **bytes embedded in the manifest** (a ``Blob``: a Parquet ``image`` column): keyed by
  a hash of the bytes themselves.

``Sources`` holds every row's origin and computes all keys at once (``keys``);
``images.load_image`` decodes whatever ``Sources[i]`` returns. Nothing else in the
package opens an image.

**Credentials.** They come from each store's own configuration: the environment and
config files that fsspec, s3fs (botocore: ``AWS_ACCESS_KEY_ID``, ``AWS_PROFILE``,
``AWS_ENDPOINT_URL``, ...) and gcsfs (``GOOGLE_APPLICATION_CREDENTIALS``, ...) read,
and fsspec's own ``FSSPEC_<PROTOCOL>_<OPTION>`` variables. A URL may carry some itself
(``https://user:pass@host/...``, a signed URL's ``X-Amz-Signature=...``): ``redact``
strips them, and a ``URL`` *is* its redacted text (``str(url)``, its repr, its
``name``); only the reads use the text as written. So outputs, cache keys, the review
page and error messages never hold a credential.

**Failures.** A missing object (404, ``NoSuchKey``) raises ``FileNotFoundError``; access
denied raises ``SourceError("access denied")``. Timeouts, 5xx answers and dropped
connections are tried again, ``NOISYCLEAN_READ_ATTEMPTS`` times in all (default 3),
with a short backoff; each request may take ``NOISYCLEAN_READ_TIMEOUT`` seconds
(default 30). What still fails raises ``SourceError`` with a few words on why.

The fsspec back ends for object stores (s3fs, gcsfs, aiohttp for HTTP) are the
``remote`` extra, imported only when a URL needs them; without them the error names
the extra.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import io
import os
import posixpath
import re
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar
from urllib.parse import unquote, urlsplit, urlunsplit

import numpy as np

from noisyclean.errors import NoisyCleanError

if TYPE_CHECKING:  # pandas and pyarrow are imported when keys are computed: images.py,
    import pyarrow as pa  # which imports this module, stays cheap

#: The install command for the object-store back ends.
REMOTE_EXTRA = "pip install 'noisyclean[remote]'"

#: A file key is two 64-bit SipHash-2-4 values of the same bytes under these two keys.
HASH_KEYS = ("noisyclean-key-0", "noisyclean-key-1")
#: Embedded images are hashed under their own two keys: their bytes never collide with
#: the ``path\0size\0mtime`` of a file.
IMAGE_HASH_KEYS = ("noisyclean-img-0", "noisyclean-img-1")
#: Files are stat'ed this many at a time; when the first of them took longer than
#: ``SLOW_STAT_SECONDS`` each (a network disk), the rest by ``STAT_THREADS`` threads.
STAT_CHUNK = 4096
SLOW_STAT_SECONDS = 50e-6
STAT_THREADS = 8
#: Objects in a store are looked at (one ``info()`` each) by this many threads.
INFO_THREADS = 32
#: Embedded images are hashed this many at a time (bounding the bytes copied at once).
HASH_CHUNK = 4096

#: Defaults of ``NOISYCLEAN_READ_TIMEOUT`` (seconds a request may take) and
#: ``NOISYCLEAN_READ_ATTEMPTS`` (tries of a request that timed out or failed for a
#: transient reason).
READ_TIMEOUT = 30.0
READ_ATTEMPTS = 3
#: Wait before the n-th retry: ``BACKOFF_SECONDS * 2 ** (n - 1)``.
BACKOFF_SECONDS = 0.25

#: What starts a URL: a scheme and ``://``.
SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+)://")
#: A URL that went through ``pathlib.Path``, which folds ``//`` into ``/``.
_FOLDED = re.compile(r"^(s3|s3a|gs|gcs|http|https|az|abfs|abfss|adl|hf|oss|r2):/(?!/)")
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]+://[^\s'\"<>]+")

#: Query parameters that carry a credential or a signature (compared lower-case):
#: AWS SigV2/SigV4, Google Cloud Storage, Azure SAS, Alibaba OSS, and the usual tokens.
SECRET_PARAMS = frozenset(
    {
        "signature",
        "expires",
        "awsaccesskeyid",
        "googleaccessid",
        "ossaccesskeyid",
        "security-token",
        "policy",
        "key-pair-id",
        # Azure shared access signatures
        "sig",
        "se",
        "sp",
        "sv",
        "st",
        "sr",
        "sk",
        "ss",
        "srt",
        "spr",
        "si",
        "sdd",
        "skoid",
        "sktid",
        "skt",
        "ske",
        "sks",
        "skv",
        "saoid",
        "suoid",
        "scid",
        # tokens and keys
        "token",
        "access_token",
        "id_token",
        "refresh_token",
        "auth",
        "authorization",
        "apikey",
        "api_key",
        "api-key",
        "key",
        "password",
        "passwd",
        "secret",
        "client_secret",
        "credential",
        "credentials",
    }
)
SECRET_PREFIXES = ("x-amz-", "x-goog-", "x-oss-", "x-cos-", "x-ms-")


class SourceError(OSError):
    """An image (or manifest) in a store that could not be read.

    Attributes:
        reason: a few words on why, free of credentials (e.g. ``timed out after 3
            attempts``, ``access denied``, ``HTTP 500 after 3 attempts``).
    """

    def __init__(self, reason: str):
        super().__init__(errno.EIO, reason)
        self.reason = reason


class ObjectNotFoundError(FileNotFoundError):
    """No object at a URL (404, NoSuchKey); its message is the redacted URL."""


# --------------------------------------------------------------------------- URLs


def is_url(location: object) -> bool:
    """Whether ``location`` is a URL (``scheme://...``) rather than a local path."""
    return isinstance(location, str) and SCHEME.match(location) is not None


def _secret_param(name: str) -> bool:
    name = unquote(name).strip().lower()
    return name in SECRET_PARAMS or name.startswith(SECRET_PREFIXES)


def redact(location: str) -> str:
    """``location`` without credentials: a URL's user info, its signed or secret query
    parameters (``SECRET_PARAMS``, ``SECRET_PREFIXES``) and an HTTP URL's fragment are
    removed; the other parameters keep their order and spelling. A local path is
    returned as is.
    """
    if not is_url(location):
        return location
    try:
        parts = urlsplit(location)
    except ValueError:  # e.g. an invalid IPv6 host: keep the scheme and host part only
        return location.split("?", 1)[0].split("#", 1)[0].rpartition("@")[2]
    netloc = parts.netloc.rpartition("@")[2]
    query = "&".join(
        piece
        for piece in parts.query.split("&")
        if piece and not _secret_param(piece.split("=", 1)[0])
    )
    # A fragment never reaches an HTTP server (and may carry a token); in an object
    # store's URL a '#' is part of the key.
    fragment = "" if parts.scheme.lower() in ("http", "https") else parts.fragment
    return urlunsplit((parts.scheme, netloc, parts.path, query, fragment))


def redact_text(text: str) -> str:
    """``text`` with every URL in it redacted (for messages built from other errors)."""
    return _URL_IN_TEXT.sub(lambda m: redact(m[0]), text)


class URL(str):
    """A URL whose text is its redacted form (``redact``), answering ``name``, ``suffix``,
    ``parent`` and ``joinpath`` like a ``Path``.

    The URL as written (credentials and all) is kept for the reads only, in
    ``as_written``; nothing prints or stores it, since ``str()`` and ``repr()`` give
    the redacted text.
    """

    as_written: str

    def __new__(cls, url: str) -> URL:
        written = url.as_written if isinstance(url, URL) else str(url)
        self = super().__new__(cls, redact(written))
        self.as_written = written
        return self

    def __reduce__(self) -> tuple[Callable[[str], URL], tuple[str]]:
        return (URL, (self.as_written,))

    @property
    def _path(self) -> str:
        parts = urlsplit(str(self))
        return parts.path + (f"#{parts.fragment}" if parts.fragment else "")

    @property
    def name(self) -> str:
        return posixpath.basename(self._path.rstrip("/")) or str(self)

    @property
    def suffix(self) -> str:
        return posixpath.splitext(self.name)[1]

    @property
    def protocol(self) -> str:
        return self.split("://", 1)[0].lower()

    @property
    def object_id(self) -> tuple[str, str, str]:
        """Scheme, host and path: what names the object, whatever the query says."""
        parts = urlsplit(str(self))
        return parts.scheme.lower(), parts.netloc.lower(), parts.path

    @property
    def parent(self) -> URL:
        """The folder: the URL up to its last ``/`` (query and user info dropped)."""
        parts = urlsplit(self.as_written)
        folder = posixpath.dirname(parts.path.rstrip("/")) or "/"
        return URL(urlunsplit((parts.scheme, parts.netloc, folder, "", "")))

    def joinpath(self, relative: str) -> URL:
        """A relative path resolved against this folder URL (``a/b`` + ``c.png``)."""
        parts = urlsplit(self.as_written)
        base = parts.path if parts.path.endswith("/") else parts.path + "/"
        rel, _, query = relative.partition("?")
        path = posixpath.normpath(posixpath.join(base, rel))
        return URL(urlunsplit((parts.scheme, parts.netloc, path, query, "")))

    def with_name(self, name: str) -> URL:
        """This URL with its last path segment replaced by ``name``."""
        parts = urlsplit(self.as_written)
        path = posixpath.join(posixpath.dirname(parts.path), name)
        return URL(urlunsplit((parts.scheme, parts.netloc, path, parts.query, "")))


Location = Path | URL


def as_location(location: str | os.PathLike[str]) -> Location:
    """A URL as a ``URL``, anything else as a ``Path`` (not resolved).

    A URL that went through ``pathlib.Path`` (``s3:/bucket/key``: the ``//`` folded)
    is recognised and restored, so ``Path(conf_meta.manifest_dir)`` still names it.
    """
    if isinstance(location, URL):
        return location
    if isinstance(location, str) and is_url(location):
        return URL(location)
    text = os.fspath(location)
    if isinstance(location, Path) and _FOLDED.match(text):
        return URL(_FOLDED.sub(lambda m: f"{m[1]}://", text, count=1))
    return Path(text)


def locate(root: Location, path: str) -> Location:
    """Where a manifest's ``path`` points: a URL as is, an absolute path as is, a
    relative path against the manifest's folder (a local folder or a URL)."""
    if is_url(path):
        return URL(path)
    p = Path(path).expanduser()
    if isinstance(root, URL):
        return p if p.is_absolute() else root.joinpath(path)
    return p if p.is_absolute() else root / p


# --------------------------------------------------------------------------- fsspec


def _setting(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    try:
        return float(raw) if raw else default
    except ValueError:
        raise NoisyCleanError(f"{name}={raw!r}: expected a number") from None


def read_timeout() -> float:
    return max(0.1, _setting("NOISYCLEAN_READ_TIMEOUT", READ_TIMEOUT))


def read_attempts() -> int:
    return max(1, int(_setting("NOISYCLEAN_READ_ATTEMPTS", READ_ATTEMPTS)))


def _merged(conf: dict[str, Any], key: str, ours: dict[str, Any]) -> dict[str, Any]:
    """Our defaults for one dict-valued option, under the user's own fsspec config."""
    theirs = conf.get(key)
    return {**ours, **theirs} if isinstance(theirs, dict) else ours


def _options(protocol: str) -> dict[str, Any]:
    """Storage options that bound each request by ``read_timeout()``; the user's fsspec
    configuration (``FSSPEC_<PROTOCOL>...``, config files) wins where it says otherwise."""
    from fsspec.config import conf

    mine = conf.get(protocol, {})
    timeout = read_timeout()
    if protocol in ("http", "https"):
        import aiohttp

        client = {
            "timeout": aiohttp.ClientTimeout(total=None, sock_connect=timeout, sock_read=timeout)
        }
        return {"client_kwargs": _merged(mine, "client_kwargs", client)}
    if protocol in ("s3", "s3a"):
        # One try per layer below (botocore here, s3fs in ``filesystem``): ``with_retries``
        # is the one retry loop, the same for every store (the layers would otherwise
        # multiply the attempts, each waiting out its own timeout).
        botocore = {
            "connect_timeout": timeout,
            "read_timeout": timeout,
            "retries": {"max_attempts": 1, "mode": "standard"},
        }
        return {"config_kwargs": _merged(mine, "config_kwargs", botocore)}
    if protocol in ("gs", "gcs"):
        return {} if "requests_timeout" in mine else {"requests_timeout": timeout}
    return {}


class MissingExtraError(NoisyCleanError):
    """A URL whose back end is not installed: the message names the ``remote`` extra."""


def filesystem(url: URL) -> tuple[Any, str]:
    """The fsspec file system of ``url`` and the path within it.

    Raises:
        MissingExtraError: fsspec, or the protocol's back end, is not installed.
        SourceError: the scheme is unknown, or the URL unusable.
    """
    try:
        import fsspec
        from fsspec.registry import known_implementations
    except ImportError:
        raise MissingExtraError(
            f"{url}: reading URLs needs fsspec and the object-store back ends: {REMOTE_EXTRA}"
        ) from None
    protocol = url.protocol
    if protocol not in known_implementations and protocol not in fsspec.available_protocols():
        raise SourceError(f"unknown URL scheme '{protocol}://'")
    try:
        fs, path = fsspec.core.url_to_fs(url.as_written, **_options(protocol))
    except ImportError:
        raise MissingExtraError(
            f"{url}: reading {protocol}:// URLs needs the remote extra: {REMOTE_EXTRA}"
        ) from None
    except (ValueError, TypeError) as err:
        first = (redact_text(str(err)).strip().splitlines() or [type(err).__name__])[0]
        raise SourceError(f"not a usable URL ({first})") from None
    if protocol in ("s3", "s3a") and isinstance(getattr(fs, "retries", None), int):
        fs.retries = 1  # s3fs's own loop (its class attribute): ``with_retries`` is ours
    return fs, path


def _status(err: BaseException) -> int | None:
    status = getattr(err, "status", None)
    if status is None:
        status = getattr(err, "status_code", None)
    return status if isinstance(status, int) else None


def _classify(err: BaseException) -> tuple[str, str]:
    """(kind, reason): kind is ``missing``, ``denied``, ``retry`` or ``fail``."""
    if isinstance(err, NoisyCleanError):
        raise err
    cause = err.__cause__
    if isinstance(err, FileNotFoundError):
        # fsspec's HTTP ``info()`` turns *any* failure into FileNotFoundError, the
        # real one chained: a 404 is missing, a 503 or a timeout is not.
        if cause is not None and not isinstance(cause, FileNotFoundError):
            kind, reason = _classify(cause)
            if kind != "fail" or _status(cause) is not None:
                return kind, reason
        return "missing", "no such object"
    if isinstance(err, PermissionError):
        return "denied", "access denied"
    status = _status(err)
    if status is not None:
        if status in (404, 410):
            return "missing", "no such object"
        if status in (401, 403):
            return "denied", f"access denied (HTTP {status})"
        if status >= 500 or status in (408, 425, 429):
            return "retry", f"HTTP {status}"
        return "fail", f"HTTP {status}"
    if isinstance(err, TimeoutError | asyncio.TimeoutError):
        return "retry", "timed out"
    name = type(err).__name__
    if "Timeout" in name:
        return "retry", "timed out"
    if isinstance(err, ConnectionError) or any(
        word in name for word in ("Connection", "Disconnected", "Payload", "Endpoint")
    ):
        return "retry", "connection error"
    if isinstance(err, OSError):
        return "retry", "read error"
    return "fail", f"read error ({name})"


T = TypeVar("T")


def with_retries(url: URL, call: Callable[[], T]) -> T:
    """``call()``, tried again after a transient failure (``read_attempts()`` tries in all).

    Raises:
        ObjectNotFoundError: nothing at ``url``.
        SourceError: access denied, or still failing after the last try.
        MissingExtraError: a back end is not installed.
    """
    attempts = read_attempts()
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except Exception as err:
            kind, reason = _classify(err)
            if kind == "missing":
                raise ObjectNotFoundError(errno.ENOENT, "no such object", str(url)) from None
            if kind == "denied" or kind == "fail":
                raise SourceError(reason) from None
            if attempt == attempts:
                tries = "attempt" if attempts == 1 else "attempts"
                raise SourceError(f"{reason} after {attempts} {tries}") from None
            time.sleep(BACKOFF_SECONDS * 2 ** (attempt - 1))
    raise AssertionError("unreachable")


def read_bytes(url: URL) -> bytes:
    """The bytes of one object (one GET; retried, see ``with_retries``)."""
    fs, path = filesystem(url)
    # s3fs asks for the size first (a HEAD) when it may download in parallel parts.
    extra = {"max_concurrency": 1} if url.protocol in ("s3", "s3a") else {}
    data = with_retries(url, lambda: fs.cat_file(path, **extra))
    return bytes(data)


@dataclass(frozen=True)
class ObjectStamp:
    """What identifies one version of an object: its ETag (when the store gives one)
    and its size."""

    etag: str
    size: int


def stat_url(url: URL) -> ObjectStamp:
    """One ``info()`` (a HEAD) of ``url``, retried; see ``with_retries`` for errors."""
    fs, path = filesystem(url)
    info = with_retries(url, lambda: fs.info(path))
    if info.get("type") == "directory":
        raise ObjectNotFoundError(errno.ENOENT, "a folder, not an object", str(url))
    etag = ""
    for field in ("ETag", "etag", "generation", "md5Hash", "Last-Modified", "LastModified"):
        if info.get(field):
            etag = f"{field}={info[field]}"
            break
    size = info.get("size")
    return ObjectStamp(etag=etag, size=int(size) if size is not None else -1)


@contextlib.contextmanager
def open_input(location: Location) -> Iterator[IO[bytes]]:
    """A local file or an object, opened for binary reading (a manifest, a decisions file).

    Raises:
        FileNotFoundError: nothing there (``ObjectNotFoundError`` for a URL).
        SourceError: a URL that can't be read (access denied, timeouts...).
    """
    if not isinstance(location, URL):
        with open(location, "rb") as fh:
            yield fh
        return
    yield io.BytesIO(read_bytes(location))


def write_output(location: URL, write: Callable[[Path], None]) -> None:
    """Write a file to a store: ``write`` fills a local temporary file, which is then
    uploaded in one ``put_file``: one PUT (or one multipart upload, completed at once),
    so readers see the old object or the new one, never a part.

    Raises:
        NoisyCleanError: one line naming the (redacted) URL.
    """
    try:
        fs, path = filesystem(location)
    except SourceError as err:
        raise NoisyCleanError(f"{location}: cannot write ({err.reason})") from None
    with tempfile.TemporaryDirectory(prefix="noisyclean-upload-") as tmp:
        local = Path(tmp) / (location.name or "upload")
        write(local)
        try:
            with_retries(location, lambda: fs.put_file(str(local), path))
        except OSError as err:
            reason = err.reason if isinstance(err, SourceError) else "no such bucket or folder"
            raise NoisyCleanError(f"{location}: cannot write ({reason})") from None


def exists(location: Location) -> bool:
    """Whether a file or an object is there (a URL costs one ``info()``)."""
    if not isinstance(location, URL):
        return location.exists()
    try:
        stat_url(location)
    except OSError:
        return False
    return True


# --------------------------------------------------------------------------- images


@dataclass(frozen=True)
class Blob:
    """Image bytes already in hand (embedded in a Parquet manifest).

    Attributes:
        data: the encoded image.
        name: what messages call it (the row's path, or ``manifest#id``).
    """

    data: bytes
    name: str

    def __str__(self) -> str:
        return self.name


#: Where one image's bytes come from; ``images.load_image`` reads all three.
ImageSource = Path | URL | Blob


def read_source(source: URL | Blob) -> bytes:
    """The encoded bytes of a remote or embedded image."""
    return source.data if isinstance(source, Blob) else read_bytes(source)


_NONE, _LOCAL, _URL, _EMBEDDED = 0, 1, 2, 3


class Sources:
    """Where each row's image comes from, and the cache key of each.

    Embedded bytes win over a path; a row with neither has no image (``missing``).

    Args:
        locations: shape (N,), each row's ``Path`` or ``URL``, or None.
        images: shape (N,), binary: the bytes embedded in the manifest, null where none;
            None when the manifest embeds none.
        names: shape (N,), what messages call each row (its path as shown); defaults to
            the locations.
    """

    def __init__(
        self,
        locations: Sequence[Location | None],
        images: pa.Array | None = None,
        names: Sequence[str] | None = None,
    ):
        self.locations = np.empty(len(locations), dtype=object)
        self.locations[:] = list(locations)
        n = len(self.locations)
        if images is not None and len(images) != n:
            raise ValueError(f"{len(images)} embedded images for {n} rows")
        self.images = images
        self.names = names
        kind = np.full(n, _NONE, dtype=np.int8)
        has = np.fromiter((x is not None for x in self.locations), dtype=bool, count=n)
        urls = np.fromiter((isinstance(x, URL) for x in self.locations), dtype=bool, count=n)
        kind[has] = _LOCAL
        kind[urls] = _URL
        if images is not None:
            kind[images.is_valid().to_numpy(zero_copy_only=False)] = _EMBEDDED
        self.kind = kind

    def __len__(self) -> int:
        return len(self.locations)

    def name(self, i: int) -> str:
        if self.names is not None:
            return str(self.names[i])
        return str(self.locations[i]) if self.locations[i] is not None else f"row {i + 1}"

    def __getitem__(self, i: int) -> ImageSource | None:
        """Row ``i``'s image: a ``Path``, a ``URL`` or a ``Blob``; None when it has none."""
        if self.kind[i] == _EMBEDDED:
            assert self.images is not None
            return Blob(data=self.images[i].as_py(), name=self.name(i))
        return self.locations[i]  # type: ignore[no-any-return]

    @property
    def remote(self) -> np.ndarray:
        """Shape (N,), bool: the rows read from a store."""
        return self.kind == _URL

    def keys(self, rows: np.ndarray) -> tuple[np.ndarray, dict[int, OSError]]:
        """The cache key's image part of each of ``rows``, in 128 bits.

        Local files: ``path\\0size\\0mtime_ns`` (``file_keys``); objects:
        ``url\\0<redacted URL>\\0<ETag>\\0size`` from one ``info()`` each, in threads
        (``url_keys``); embedded images: their bytes, under ``IMAGE_HASH_KEYS``.

        Returns:
            keys: shape (len(rows), 2), uint64; zeros where there is an error.
            errors: position in ``rows`` -> ``FileNotFoundError`` (no image there) or
                another ``OSError`` (e.g. ``SourceError``, ``PermissionError``).
        """
        rows = np.asarray(rows, dtype=np.int64)
        keys = np.zeros((len(rows), 2), dtype=np.uint64)
        errors: dict[int, OSError] = {}
        kind = self.kind[rows]
        for j in np.flatnonzero(kind == _NONE):
            errors[int(j)] = FileNotFoundError(errno.ENOENT, "no image", self.name(rows[j]))
        for which, keyer in ((_LOCAL, file_keys), (_URL, url_keys)):
            at = np.flatnonzero(kind == which)
            if len(at):
                got, errs = keyer(list(self.locations[rows[at]]))
                keys[at] = got
                errors.update((int(at[j]), err) for j, err in errs.items())
        at = np.flatnonzero(kind == _EMBEDDED)
        if len(at):
            import pyarrow as pa

            assert self.images is not None
            keys[at] = bytes_keys(self.images.take(pa.array(rows[at])))
        return keys, dict(sorted(errors.items()))


def _hash(data: np.ndarray, hash_keys: tuple[str, str]) -> np.ndarray:
    import pandas as pd

    out = np.zeros((len(data), 2), dtype=np.uint64)
    for col, hash_key in enumerate(hash_keys):
        out[:, col] = pd.util.hash_array(data, hash_key=hash_key, categorize=False)
    return out


def bytes_keys(images: pa.Array) -> np.ndarray:
    """Keys of embedded images (no nulls): SipHash-2-4 of their bytes under
    ``IMAGE_HASH_KEYS``, ``HASH_CHUNK`` images at a time."""
    out = np.zeros((len(images), 2), dtype=np.uint64)
    for start in range(0, len(images), HASH_CHUNK):
        chunk = images.slice(start, HASH_CHUNK).to_numpy(zero_copy_only=False)
        out[start : start + len(chunk)] = _hash(np.asarray(chunk, dtype=object), IMAGE_HASH_KEYS)
    return out


def url_keys(urls: Sequence[URL]) -> tuple[np.ndarray, dict[int, OSError]]:
    """Keys of objects: the redacted URL, ETag and size of each, from one ``info()`` per
    object, ``INFO_THREADS`` at a time; nothing is downloaded.

    Returns:
        keys: shape (N, 2), uint64, zeros where the object could not be looked at.
        errors: position -> ``ObjectNotFoundError`` or ``SourceError``.
    """

    def one(url: URL) -> ObjectStamp | OSError:
        try:
            return stat_url(url)
        except OSError as err:
            return err

    if len(urls) > 1:
        with ThreadPoolExecutor(min(INFO_THREADS, len(urls))) as pool:
            stamps = list(pool.map(one, urls))
    else:
        stamps = [one(u) for u in urls]
    errors = {i: s for i, s in enumerate(stamps) if isinstance(s, OSError)}
    data = np.empty(len(urls) - len(errors), dtype=object)
    data[:] = [
        b"url\0%b\0%b\0%d" % (str(url).encode("utf-8", "surrogateescape"), s.etag.encode(), s.size)
        for url, s in zip(urls, stamps, strict=True)
        if isinstance(s, ObjectStamp)
    ]
    keys = np.zeros((len(urls), 2), dtype=np.uint64)
    ok = np.ones(len(urls), dtype=bool)
    ok[list(errors)] = False
    keys[ok] = _hash(data, HASH_KEYS)
    return keys, errors


def file_keys(paths: Sequence[Path]) -> tuple[np.ndarray, dict[int, OSError]]:
    """The cache key's file part of each path: the path, byte size and mtime, in 128 bits.

    Each file is ``stat``-ed (one system call a file, in threads on a slow disk); the
    bytes ``path\\0size\\0mtime_ns`` of all of them are then hashed at once, by pandas'
    SipHash-2-4 under each of the two ``HASH_KEYS``.

    Args:
        paths: the files, as the manifest resolves them.

    Returns:
        keys: shape (N, 2), uint64; the rows of files that could not be stat-ed are zeros.
        errors: position -> the ``OSError`` from ``stat``: ``FileNotFoundError`` when the
            file is gone, ``PermissionError`` when a folder on its path may not be entered.
    """
    names = [os.fsencode(p) for p in paths]  # bytes: any file name, UTF-8 or not
    stats = _stat_all(names)
    errors = {i: st for i, st in enumerate(stats) if isinstance(st, OSError)}
    data = np.empty(len(names) - len(errors), dtype=object)  # bytes, hashed as they are
    data[:] = [
        b"%b\0%d\0%d" % (name, st.st_size, st.st_mtime_ns)
        for name, st in zip(names, stats, strict=True)
        if not isinstance(st, OSError)
    ]
    ok = np.ones(len(names), dtype=bool)
    ok[list(errors)] = False
    keys = np.zeros((len(names), 2), dtype=np.uint64)
    keys[ok] = _hash(data, HASH_KEYS)
    return keys, errors


def _stat_chunk(names: Sequence[bytes]) -> list[os.stat_result | OSError]:
    """``os.stat`` of each file, or the error it raised."""
    out: list[os.stat_result | OSError] = []
    for name in names:
        try:
            out.append(os.stat(name))
        except OSError as err:
            out.append(err)
    return out


def _stat_all(names: Sequence[bytes]) -> list[os.stat_result | OSError]:
    """``_stat_chunk`` of all files: the first ``STAT_CHUNK`` in this thread, and the rest
    in ``STAT_THREADS`` threads when those took over ``SLOW_STAT_SECONDS`` each (a
    network disk; on a local disk threads only add overhead)."""
    started = time.perf_counter()
    first = _stat_chunk(names[:STAT_CHUNK])
    rest = names[STAT_CHUNK:]
    if not rest:
        return first
    if time.perf_counter() - started <= SLOW_STAT_SECONDS * len(first):
        return first + _stat_chunk(rest)
    chunks = [rest[i : i + STAT_CHUNK] for i in range(0, len(rest), STAT_CHUNK)]
    with ThreadPoolExecutor(min(STAT_THREADS, len(chunks))) as pool:
        return first + [st for part in pool.map(_stat_chunk, chunks) for st in part]
