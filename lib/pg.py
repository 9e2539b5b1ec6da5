"""The app's Postgres: JDBC URLs, credentials and connections, shared by the postgres
source (``lib.sources.postgres``) and the ``export`` stage.

Credentials come only from the environment, under libpq's names PGUSER and PGPASSWORD:
never from the config or the URL, which end up in logs, the runs table and shell history.
A URL that carries them is refused. Every failure to reach the database becomes one
``UserError`` line that names the server (never the password).
"""
from __future__ import annotations

import os
import re
from urllib.parse import parse_qsl, unquote

from lib.errors import UserError

JDBC_DRIVER = "org.postgresql.Driver"
_PREFIX = "jdbc:postgresql://"
_FORM = "jdbc:postgresql://HOST:PORT/DATABASE"
# pgjdbc URL parameters that libpq knows under another name (the rest are JDBC-only).
_LIBPQ_NAMES = {"sslmode": "sslmode", "sslrootcert": "sslrootcert", "sslcert": "sslcert", "sslkey": "sslkey",
                "connecttimeout": "connect_timeout", "applicationname": "application_name"}
CONNECT_TIMEOUT_S = 15


def check_url(url: str, key: str = "url") -> str:
    """``url`` when it is a usable JDBC URL without credentials; else a UserError naming ``key``."""
    url = (url or "").strip()
    if not url.startswith(_PREFIX):
        raise UserError(f"{key} {redact(url)!r} is not a PostgreSQL JDBC URL; give {_FORM}")
    authority = url[len(_PREFIX):].split("/", 1)[0].split("?", 1)[0]
    # Anything that looks like a credential anywhere (?, ;, # or & forms), not just in the query.
    if "@" in authority or any(_secret_param(k) for k, _ in _params(url)) or \
            re.search(r"(?i)[?;#&]\s*(ssl)?(password|passwd|pwd|user)\s*=", url):
        raise UserError(f"{key} must not carry a user or password; give {_FORM} and put the credentials "
                        "in the environment: PGUSER and PGPASSWORD")
    if not authority or not _database(url):
        raise UserError(f"{key} {redact(url)!r} names no host or database; give {_FORM}")
    return url


def credentials() -> tuple[str, str | None]:
    """(PGUSER, PGPASSWORD); the password may be absent (trust or certificate auth)."""
    user = os.environ.get("PGUSER", "")
    if not user:
        raise UserError("PGUSER is not set; put the database user in PGUSER and its password in PGPASSWORD")
    return user, os.environ.get("PGPASSWORD")


def jdbc_options(url: str) -> dict:
    """Spark JDBC connection properties for ``url`` (user and password from the environment;
    Spark redacts options named like ``password`` in plans and the UI)."""
    user, password = credentials()
    opts = {"url": check_url(url), "driver": JDBC_DRIVER, "user": user}
    if password is not None:
        opts["password"] = password
    return opts


def conninfo(url: str) -> str:
    """The libpq connection string for a JDBC URL, without credentials.

    ``jdbc:postgresql://h1:5432,h2/db?sslmode=require`` -> ``host=h1,h2 port=5432,5432
    dbname=db sslmode=require``. JDBC-only parameters (e.g. reWriteBatchedInserts) are dropped.
    """
    from psycopg.conninfo import make_conninfo
    url = check_url(url)
    hosts, ports = [], []
    for part in url[len(_PREFIX):].split("/", 1)[0].split(","):
        if part.startswith("["):  # [::1]:5432
            host, _, rest = part[1:].partition("]")
            port = rest[1:] if rest.startswith(":") else ""
        else:
            host, _, port = part.partition(":")
        if not host or (port and not port.isdigit()):
            raise UserError(f"url {redact(url)!r}: cannot read host and port from {part!r}; give {_FORM}")
        hosts.append(host)
        ports.append(port or "5432")
    params = {"host": ",".join(hosts), "port": ",".join(ports), "dbname": _database(url),
              "connect_timeout": str(CONNECT_TIMEOUT_S)}
    for key, value in _params(url):
        if key.lower() in _LIBPQ_NAMES:
            params[_LIBPQ_NAMES[key.lower()]] = value
        elif key.lower() == "currentschema":
            params["options"] = "-c search_path=" + value.replace("\\", "\\\\").replace(" ", "\\ ")
    return make_conninfo(**params)


def connect(url: str, autocommit: bool = False):
    """A psycopg connection to the database of ``url`` as PGUSER; a failure is one UserError line."""
    import psycopg
    user, password = credentials()
    info = conninfo(url)
    try:
        return psycopg.connect(info, user=user, password=password, autocommit=autocommit)
    except psycopg.Error as e:
        raise UserError(f"cannot connect to PostgreSQL at {redact(url)} as {user!r}: {error_text(e)}; "
                        "check the URL, that the server runs, and PGUSER/PGPASSWORD") from None


def error_text(e: BaseException) -> str:
    """The telling line of a driver error (psycopg, or a Py4J error around a PSQLException),
    without the password."""
    text = str(e)
    if "PSQLException: " in text:  # JVM: "org.postgresql.util.PSQLException: FATAL: ..."
        text = text.split("PSQLException: ", 1)[1]
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    fatal = [ln for ln in lines if "FATAL:" in ln or "ERROR:" in ln]
    line = (fatal or lines or [type(e).__name__])[0]
    line = re.sub(r"^connection failed:\s*", "", re.sub(r"\s+", " ", line))
    password = os.environ.get("PGPASSWORD")
    if password:
        line = line.replace(password, "***")
    return line[:400]


def redact(url: str) -> str:
    """``url`` fit for logs: any user/password in it replaced by ***."""
    url = re.sub(r"(//)[^/@?]*@", r"\1***@", url or "")
    return re.sub(r"(?i)\b((?:ssl)?password|user)=[^&;]*", r"\1=***", url)


def _params(url: str) -> list:
    query = url.split("?", 1)[1] if "?" in url else ""
    return parse_qsl(query, keep_blank_values=True)


def _secret_param(key: str) -> bool:
    key = key.lower()
    return key == "user" or "password" in key


def _database(url: str) -> str:
    rest = url[len(_PREFIX):].split("?", 1)[0]
    return unquote(rest.split("/", 1)[1]) if "/" in rest else ""
