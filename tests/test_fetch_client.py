"""The fhirServer read client against real loopback servers: TLS by name at a pinned address,
one name lookup per call (no DNS rebinding), the address policy, the deadline, the byte budget."""

from __future__ import annotations

import datetime
import gzip
import ipaddress
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from fhir_adapters.fhir_client import CHUNK, FhirReadClient, FhirTooLarge, FhirUnavailable
from fhir_adapters.safe_url import Origin
from redflags.service.cds.fhir_policy import FhirPolicy

from .fetch_servers import RawServer, answer_json, drip, endless, head, searchset

NAME = "ehr.test"


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[ssl.SSLContext, str]:
    """A server context with a self-signed certificate for ``ehr.test`` only, and its CA file."""
    tmp = tmp_path_factory.mktemp("tls")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, NAME)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(NAME)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp / "cert.pem", tmp / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    return context, str(cert_file)


class Resolver:
    """Answers ``first`` once, then ``later`` (a rebinding DNS server); counts the lookups."""

    def __init__(self, first: list[str], later: list[str] | None = None) -> None:
        self.first, self.later, self.calls = first, later or first, 0

    def __call__(self, host: str, port: int) -> list[str]:
        self.calls += 1
        return self.first if self.calls == 1 else self.later


def paged(hit: Any, server: RawServer) -> dict[str, Any]:
    """Three pages, each linking to the next by the server's name."""
    n = len(server.hits)
    later = f"https://{NAME}:{server.port}/fhir/Observation?page={n + 1}" if n < 3 else None
    return searchset([{"resource": {"resourceType": "Observation", "id": f"o{n}"}}], next_url=later)


def client(base: str, **kw: Any) -> FhirReadClient:
    options: dict[str, Any] = {"access_token": "secret-token", "deadline": time.monotonic() + 10}
    return FhirReadClient(base, **{**options, **kw})


@pytest.fixture
def rebound(tls: tuple[ssl.SSLContext, str]) -> Iterator[tuple[RawServer, RawServer]]:
    """The EHR on 127.0.0.1 and an impostor with the same certificate on 127.0.0.2, same port."""
    with RawServer(answer_json(paged), tls=tls[0]) as ehr:
        with RawServer(answer_json(paged), "127.0.0.2", ehr.port, tls=tls[0]) as impostor:
            yield ehr, impostor


def test_one_lookup_per_call_and_every_page_from_the_checked_address(rebound, tls) -> None:
    ehr, impostor = rebound
    resolve = Resolver(["127.0.0.1"], ["127.0.0.2"])
    allowed = FhirPolicy(allowed=frozenset({Origin("https", NAME, ehr.port)}))
    with client(f"https://{NAME}:{ehr.port}/fhir", policy=allowed, resolve=resolve, ca_certs=tls[1]) as fhir:
        pages = list(fhir.search("Observation?patient=p1", "Observation"))
    assert [p["entry"][0]["resource"]["id"] for p in pages] == ["o1", "o2", "o3"]
    assert resolve.calls == 1 and impostor.accepted == 0
    assert {h.headers["host"] for h in ehr.hits} == {f"{NAME}:{ehr.port}"}  # the name, not the address
    assert {h.headers["authorization"] for h in ehr.hits} == {"Bearer secret-token"}


def test_the_certificate_is_checked_against_the_name_not_the_address(rebound, tls) -> None:
    ehr, _ = rebound
    other = "other.test"
    allowed = FhirPolicy(allowed=frozenset({Origin("https", other, ehr.port)}))
    with pytest.raises(FhirUnavailable, match="SSLError"):
        with client(
            f"https://{other}:{ehr.port}", policy=allowed, resolve=Resolver(["127.0.0.1"]), ca_certs=tls[1]
        ) as fhir:
            fhir.read("Patient/p1", "Patient")
    assert ehr.hits == []  # no request (and no token) over an unverified connection


@pytest.mark.parametrize(
    ("addresses", "kind"),
    [
        (["127.0.0.5"], "loopback"),
        (["93.184.216.34", "127.0.0.5"], "loopback"),  # every address must pass, not just one
        (["::ffff:127.0.0.5"], "loopback"),
    ],
)
def test_a_name_resolving_to_a_refused_address_is_never_contacted(addresses: list[str], kind: str) -> None:
    with RawServer(answer_json(searchset([])), "127.0.0.5") as local:
        with pytest.raises(FhirUnavailable, match=f"{kind} address"):
            client(f"https://{NAME}:{local.port}", policy=FhirPolicy(), resolve=Resolver(addresses))
        assert local.accepted == 0


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("10.1.2.3", "private"),
        ("192.168.0.1", "private"),
        ("172.16.0.1", "private"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("fd00::1", "private"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("100.64.0.1", "not global"),
        ("224.0.0.1", "multicast"),
        ("::ffff:10.0.0.1", "private"),
        ("::1", "loopback"),
    ],
)
def test_address_policy_refuses_what_is_not_public(address: str, kind: str) -> None:
    origin = Origin("https", NAME, 443)
    assert kind in (FhirPolicy().after_resolving(origin, [address]) or "")
    assert FhirPolicy(allowed=frozenset({origin})).after_resolving(origin, [address]) is None
    assert FhirPolicy(listed=frozenset({origin})).after_resolving(origin, [address]) is None
    assert FhirPolicy().after_resolving(origin, ["93.184.216.34", "2606:4700::1111"]) is None


def test_policy_by_origin_before_any_lookup() -> None:
    ehr = Origin("https", "ehr.example.org", 443)
    listed = FhirPolicy(listed=frozenset({ehr}))
    assert listed.before_resolving(ehr) is None
    assert listed.before_resolving(Origin("https", "ehr.example.org", 8443)) == (
        "is not among this client's fhirServers"
    )
    assert FhirPolicy().before_resolving(Origin("http", "ehr.example.org", 80)) == "is plain http"
    assert FhirPolicy().before_resolving(Origin("http", "127.0.0.1", 80)) == "is plain http"
    assert FhirPolicy(loopback=True).before_resolving(Origin("http", "127.0.0.1", 80)) is None
    assert (
        FhirPolicy(loopback=True).before_resolving(Origin("http", "ehr.example.org", 80)) == "is plain http"
    )
    assert FhirPolicy(loopback=True).after_resolving(Origin("http", "localhost", 80), ["93.184.216.34"])


@pytest.mark.parametrize("in_head", [False, True], ids=["body", "headers"])
def test_the_deadline_holds_against_a_drip(in_head: bool) -> None:
    budget = 1.0
    with RawServer(drip(0.2, in_head=in_head)) as slow:
        started = time.monotonic()
        with pytest.raises(FhirUnavailable, match="did not answer in time"):
            with client(slow.url, policy=FhirPolicy(loopback=True), deadline=started + budget) as fhir:
                fhir.read("Patient/p1", "Patient")
        assert time.monotonic() - started < budget + 5  # generous: the watchdog fires at the deadline
        assert slow.wait(lambda s: s.open == 0, timeout=5)


def test_the_byte_budget_stops_an_endless_body_and_spans_pages() -> None:
    with RawServer(endless) as flood:
        with pytest.raises(FhirTooLarge, match="over 200000 bytes"):
            with client(flood.url, policy=FhirPolicy(loopback=True), max_bytes=200_000) as fhir:
                fhir.read("Patient/p1", "Patient")
        assert flood.wait(lambda s: s.open == 0, timeout=10)
    page = answer_json(searchset([], pad=30_000))
    with RawServer(page) as ehr:
        with client(ehr.url, policy=FhirPolicy(loopback=True), max_bytes=100_000) as fhir:
            fhir.read("Observation/a", "a")
            fhir.read("Observation/b", "b")
            assert fhir.bytes_left < 100_000 - 60_000
            with pytest.raises(FhirTooLarge):
                fhir.read("Observation/c", "c")
                fhir.read("Observation/d", "d")
    assert CHUNK <= 64 * 1024  # what one read may hold beyond the budget


def test_a_declared_length_over_the_budget_is_not_read() -> None:
    with RawServer(answer_json(searchset([], pad=50_000))) as big:
        with pytest.raises(FhirTooLarge):
            with client(big.url, policy=FhirPolicy(loopback=True), max_bytes=10_000) as fhir:
                fhir.read("Patient/p1", "Patient")


def test_the_token_is_sent_only_after_the_link_check(tmp_path: Path) -> None:
    """A link to another origin raises before any request: the other host gets nothing."""
    with RawServer(answer_json(searchset([]))) as other:
        bundle = searchset([], next_url=f"http://127.0.0.1:{other.port}/x")
        with client("http://127.0.0.1:9/fhir", policy=FhirPolicy(loopback=True)) as fhir:
            pages = fhir.pages(bundle, "Observation")
            next(pages)
            with pytest.raises(FhirUnavailable, match="outside the FHIR server"):
                next(pages)
        assert other.accepted == 0 and fhir.requests == 0


def test_literal_addresses_are_not_looked_up() -> None:
    resolve = Resolver(["93.184.216.34"])
    with RawServer(answer_json({"resourceType": "Patient", "id": "p1"})) as ehr:
        with client(ehr.url, policy=FhirPolicy(loopback=True), resolve=resolve) as fhir:
            assert fhir.read("Patient/p1", "Patient") == {"resourceType": "Patient", "id": "p1"}
    assert resolve.calls == 0
    assert ipaddress.ip_address("127.0.0.1").is_loopback


def test_a_compressed_body_counts_as_what_it_inflates_to() -> None:
    """10 MB of zeros in 10 kB of gzip: stopped at the budget, never inflated whole."""
    bomb = gzip.compress(b"0" * 10_000_000)

    def respond(conn: Any, _hit: Any, _server: RawServer) -> None:
        conn.sendall(head(length=len(bomb), Content_Encoding="gzip") + bomb)

    with RawServer(respond) as ehr:
        with pytest.raises(FhirTooLarge):
            with client(ehr.url, policy=FhirPolicy(loopback=True), max_bytes=200_000) as fhir:
                fhir.read("Patient/p1", "Patient")


def test_a_relative_next_link_is_joined_to_the_base_and_followed() -> None:
    def respond(hit: Any, server: RawServer) -> dict[str, Any]:
        return searchset([], next_url="Observation?page=2" if len(server.hits) == 1 else None)

    with RawServer(answer_json(respond)) as ehr:
        with client(f"{ehr.url}/fhir", policy=FhirPolicy(loopback=True)) as fhir:
            assert len(list(fhir.search("Observation?patient=p1", "Observation"))) == 2
    assert [h.path for h in ehr.hits] == ["/fhir/Observation?patient=p1", "/fhir/Observation?page=2"]


@pytest.mark.parametrize("host", ["a" * 64 + ".test", "a..test"])
def test_a_name_the_resolver_cannot_encode_is_unavailable_not_an_error(host: str) -> None:
    """The idna codec raises UnicodeError (not OSError) before any lookup is made."""
    with pytest.raises(FhirUnavailable, match="name lookup failed"):
        client(f"https://{host}", policy=FhirPolicy())


@pytest.mark.parametrize("link", ["http://[::1/x", "//[::1/x", "http://h:99999/x", "http://h:x/"])
def test_a_next_link_no_parser_can_read_is_unavailable(link: str) -> None:
    with client("http://127.0.0.1:9/fhir", policy=FhirPolicy(loopback=True)) as fhir:
        pages = fhir.pages(searchset([], next_url=link), "Observation")
        next(pages)
        with pytest.raises(FhirUnavailable, match="not followed"):
            next(pages)
