"""The local Hub (tests/hub_server) driven by the unmodified huggingface_hub 2.4 client and transformers.

Every assertion is on what the real client does with the server's answers: its exceptions, its cache,
its skip-unchanged-files logic, its LFS retries. Helpers on `hub_server` (fault injection, the request
log, the storage directory) only set up faults and look at what reached the server.
"""

import hashlib
import os
import threading
import uuid

import httpx2
import pytest
import torch
from huggingface_hub import (
    CommitOperationAdd,
    HfApi,
    HfFileSystem,
    get_hf_file_metadata,
    hf_hub_download,
    hf_hub_url,
    snapshot_download,
)
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import get_session

# Above the Hub's 10 MiB limit for regular files; text, so only its size sends it through LFS.
BIG_FILE_SIZE = 10 * 1024 * 1024 + 123


def _repo(api: HfApi, **kwargs) -> str:
    repo_id = f"tester/r-{uuid.uuid4().hex[:8]}"
    api.create_repo(repo_id, **kwargs)
    return repo_id


def _git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _read(path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def test_whoami_create_repo_conflicts_and_permissions(hub_env):
    api = HfApi()
    assert api.whoami()["name"] == "tester"
    repo_id = _repo(api)
    assert api.create_repo(repo_id, exist_ok=True).repo_id == repo_id
    with pytest.raises(HfHubHTTPError) as conflict:
        api.create_repo(repo_id)
    assert conflict.value.response.status_code == 409

    with pytest.raises(HfHubHTTPError) as bad_token:
        HfApi(token="hf_not_a_token").whoami()
    assert bad_token.value.response.status_code == 401
    with pytest.raises(HfHubHTTPError) as bad_token_read:
        HfApi(token="hf_not_a_token").model_info(repo_id)
    assert bad_token_read.value.response.status_code == 401
    assert not isinstance(bad_token_read.value, RepositoryNotFoundError), "a bad token must read as 401, not 404"

    intruder = HfApi(token=hub_env.other_token)
    assert intruder.model_info(repo_id).id == repo_id  # public: readable by anyone
    with pytest.raises(HfHubHTTPError) as foreign_write:
        intruder.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=repo_id)
    assert foreign_write.value.response.status_code == 403
    with pytest.raises(HfHubHTTPError) as foreign_namespace:
        intruder.create_repo("tester/not-yours")
    assert foreign_namespace.value.response.status_code == 403
    with pytest.raises(HfHubHTTPError) as foreign_delete:
        intruder.delete_repo(repo_id)
    assert foreign_delete.value.response.status_code == 403

    api.delete_repo(repo_id)
    with pytest.raises(RepositoryNotFoundError):
        api.model_info(repo_id)
    api.delete_repo(repo_id, missing_ok=True)


def test_upload_folder_with_lfs_file_then_download(hub_env, tmp_path, caplog):
    api = HfApi()
    repo_id = _repo(api)
    folder = tmp_path / "folder"
    (folder / "nested" / "deeper").mkdir(parents=True)
    files = {
        "config.json": b'{"model_type": "bert", "architectures": ["BertModel"]}',
        "model.safetensors": os.urandom(3000),           # LFS by the repo's .gitattributes
        "big.txt": b"0123456789abcdef" * (BIG_FILE_SIZE // 16) + b"x" * (BIG_FILE_SIZE % 16),  # LFS by size
        "nested/deeper/vocab.txt": "[PAD]\n[UNK]\n你好\n".encode(),
        "empty.txt": b"",
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)

    with caplog.at_level("INFO", logger="hub_server"):
        commit = api.upload_folder(folder_path=folder, repo_id=repo_id, commit_message="first upload")
    assert caplog.records, "the server logs each request"
    assert hub_env.token not in caplog.text, "the server must never log the token"

    info = api.model_info(repo_id, files_metadata=True)
    assert info.sha == commit.oid
    assert info.config == {"model_type": "bert", "architectures": ["BertModel"]}
    siblings = {s.rfilename: s for s in info.siblings}
    assert set(siblings) == set(files) | {".gitattributes"}
    assert {name for name, s in siblings.items() if s.lfs} == {"model.safetensors", "big.txt"}
    for name, data in files.items():
        assert siblings[name].size == len(data), name
        if siblings[name].lfs:
            assert siblings[name].lfs.sha256 == hashlib.sha256(data).hexdigest(), name
        else:
            assert siblings[name].blob_id == _git_blob_sha1(data), name

    # HEAD /resolve: the metadata file_download relies on (ETag, X-Linked-Etag/-Size, X-Repo-Commit)
    big_meta = get_hf_file_metadata(hf_hub_url(repo_id, "big.txt"))
    assert (big_meta.commit_hash, big_meta.etag, big_meta.size) == (
        commit.oid, hashlib.sha256(files["big.txt"]).hexdigest(), BIG_FILE_SIZE)
    config_meta = get_hf_file_metadata(hf_hub_url(repo_id, "config.json"))
    assert config_meta.etag == _git_blob_sha1(files["config.json"])

    for name, data in files.items():
        assert _read(hf_hub_download(repo_id, name)) == data, name
    snapshot = snapshot_download(repo_id, revision=commit.oid)
    for name, data in files.items():
        assert _read(os.path.join(snapshot, name)) == data, name

    tree = {entry.path: entry for entry in api.list_repo_tree(repo_id, recursive=True)}
    assert set(tree) == set(files) | {".gitattributes", "nested", "nested/deeper"}
    top = {entry.path for entry in api.list_repo_tree(repo_id)}
    assert top == {".gitattributes", "config.json", "model.safetensors", "big.txt", "empty.txt", "nested"}
    assert [e.path for e in api.list_repo_tree(repo_id, path_in_repo="nested/deeper")] == ["nested/deeper/vocab.txt"]
    paths = api.get_paths_info(repo_id, ["big.txt", "nested", "missing.txt"])
    assert [(p.path, type(p).__name__) for p in paths] == [("big.txt", "RepoFile"), ("nested", "RepoFolder")]

    # The client skips files whose oid (sha256 for LFS, git sha1 otherwise) the server already reports.
    stored_before = hub_env.faults.lfs_uploads_stored
    unchanged = api.upload_folder(folder_path=folder, repo_id=repo_id)
    assert unchanged.oid == commit.oid
    assert hub_env.faults.lfs_uploads_stored == stored_before
    assert len(api.list_repo_commits(repo_id)) == 2  # the Hub's initial commit + ours


def test_revisions_by_branch_tag_and_sha(hub_env):
    api = HfApi()
    repo_id = _repo(api)
    first = api.upload_file(path_or_fileobj=b"v1", path_in_repo="weights.txt", repo_id=repo_id)
    api.create_tag(repo_id, tag="v1.0")
    api.create_branch(repo_id, branch="dev")
    with pytest.raises(HfHubHTTPError) as duplicate:
        api.create_branch(repo_id, branch="dev")
    assert duplicate.value.response.status_code == 409
    dev = api.upload_file(path_or_fileobj=b"dev", path_in_repo="weights.txt", repo_id=repo_id, revision="dev")
    second = api.create_commit(repo_id, operations=[CommitOperationAdd("weights.txt", b"v2")],
                               commit_message="second", parent_commit=first.oid)
    with pytest.raises(HfHubHTTPError) as stale:  # parentCommit is a compare-and-swap on the branch
        api.create_commit(repo_id, operations=[CommitOperationAdd("weights.txt", b"v3")],
                          commit_message="stale", parent_commit=first.oid)
    assert stale.value.response.status_code == 412

    for revision, expected in [(None, b"v2"), ("main", b"v2"), (second.oid, b"v2"), (first.oid, b"v1"),
                               ("v1.0", b"v1"), ("dev", b"dev"), (dev.oid, b"dev")]:
        assert _read(hf_hub_download(repo_id, "weights.txt", revision=revision)) == expected, revision

    refs = api.list_repo_refs(repo_id)
    assert {b.name: b.target_commit for b in refs.branches} == {"main": second.oid, "dev": dev.oid}
    assert {t.name: t.target_commit for t in refs.tags} == {"v1.0": first.oid}
    assert [c.commit_id for c in api.list_repo_commits(repo_id)][:2] == [second.oid, first.oid]
    assert api.list_repo_commits(repo_id, revision="dev")[0].title == "Upload weights.txt with huggingface_hub"

    api.delete_file("weights.txt", repo_id)
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(repo_id, "weights.txt")
    assert _read(hf_hub_download(repo_id, "weights.txt", revision=second.oid)) == b"v2"
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(repo_id, "weights.txt", revision="no-such-branch")
    with pytest.raises(RevisionNotFoundError):
        api.model_info(repo_id, revision="0" * 40)
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(repo_id, "never-existed.bin", revision="v1.0")


def test_private_repo_is_invisible_without_the_owners_token(hub_env, tmp_path):
    api = HfApi()
    repo_id = _repo(api, private=True)
    api.upload_file(path_or_fileobj=b"secret", path_in_repo="data.txt", repo_id=repo_id)
    assert api.model_info(repo_id).private is True
    assert _read(hf_hub_download(repo_id, "data.txt")) == b"secret"
    for token in (False, hub_env.other_token):
        with pytest.raises(RepositoryNotFoundError):
            hf_hub_download(repo_id, "data.txt", token=token, cache_dir=tmp_path / "other_cache")
        with pytest.raises(RepositoryNotFoundError):
            HfApi(token=token).model_info(repo_id)
    with pytest.raises(RepositoryNotFoundError):  # writing needs to see the repo first
        HfApi(token=hub_env.other_token).upload_file(path_or_fileobj=b"x", path_in_repo="x", repo_id=repo_id)


def test_dataset_repo_round_trip(hub_env):
    api = HfApi()
    repo_id = f"tester/d-{uuid.uuid4().hex[:8]}"
    api.create_repo(repo_id, repo_type="dataset")
    api.upload_file(path_or_fileobj="一行中文\n".encode(), path_in_repo="train.txt", repo_id=repo_id,
                    repo_type="dataset")
    assert _read(hf_hub_download(repo_id, "train.txt", repo_type="dataset")).decode() == "一行中文\n"
    with pytest.raises(RepositoryNotFoundError):  # a dataset is not a model
        api.model_info(repo_id)


def test_range_requests(hub_env):
    api = HfApi()
    repo_id = _repo(api)
    data = bytes(range(256)) * 40
    api.upload_file(path_or_fileobj=data, path_in_repo="blob.bin", repo_id=repo_id)
    fs = HfFileSystem(skip_instance_cache=True)
    with fs.open(f"{repo_id}/blob.bin", "rb", block_size=1000) as f:  # fsspec reads through Range requests
        f.seek(5000)
        assert f.read(300) == data[5000:5300]
    assert any(m == "GET" and p.endswith("/blob.bin") and r and r.startswith("bytes=")
               for m, p, r in hub_env.requests)

    url = hf_hub_url(repo_id, "blob.bin")
    partial = get_session().get(url, headers={"Range": "bytes=10-19"})
    assert partial.status_code == 206 and partial.content == data[10:20]
    assert partial.headers["Content-Range"] == f"bytes 10-19/{len(data)}"
    assert get_session().get(url, headers={"Range": "bytes=-4"}).content == data[-4:]
    assert get_session().get(url, headers={"Range": f"bytes={len(data)}-"}).status_code == 416


def _storage_snapshot(hub_server):
    """Every file under the server's storage, to show a failed upload left nothing behind."""
    return {os.path.join(root, name) for root, _, names in os.walk(hub_server.storage) for name in names}


def test_dropped_lfs_upload_is_retried_and_commits_once(hub_env):
    api = HfApi()
    repo_id = _repo(api)
    head = api.model_info(repo_id).sha
    data = os.urandom(2 * 1024 * 1024)
    dropped = hub_env.faults.lfs_uploads_dropped
    hub_env.drop_next_lfs_uploads(1)
    commit = api.upload_file(path_or_fileobj=data, path_in_repo="model.safetensors", repo_id=repo_id)
    assert hub_env.faults.lfs_uploads_dropped == dropped + 1, "the server cut one upload"
    assert [c.commit_id for c in api.list_repo_commits(repo_id)][:2] == [commit.oid, head]
    assert _read(hf_hub_download(repo_id, "model.safetensors")) == data


def test_dropped_lfs_uploads_fail_cleanly_without_partial_commit(hub_env):
    """Costs ~23 s of the client's own back-off (1+2+4+8+8 s) before it gives up."""
    api = HfApi()
    repo_id = _repo(api)
    api.upload_file(path_or_fileobj=b"kept", path_in_repo="README.md", repo_id=repo_id)
    head, files = api.model_info(repo_id).sha, api.list_repo_files(repo_id)
    before = _storage_snapshot(hub_env)
    data = os.urandom(1024 * 1024)
    dropped = hub_env.faults.lfs_uploads_dropped
    hub_env.drop_next_lfs_uploads(6)  # the first try and all 5 retries of http_backoff
    try:
        with pytest.raises(RuntimeError, match="Error while uploading 'model.safetensors'") as failure:
            api.create_commit(repo_id, commit_message="never lands", operations=[
                CommitOperationAdd("notes.txt", b"small file of the same commit"),
                CommitOperationAdd("model.safetensors", data),
            ])
    finally:
        hub_env.drop_next_lfs_uploads(0)
    assert isinstance(failure.value.__cause__, httpx2.TransportError), repr(failure.value.__cause__)
    assert hub_env.faults.lfs_uploads_dropped == dropped + 6
    assert api.model_info(repo_id).sha == head
    assert api.list_repo_files(repo_id) == files
    assert _storage_snapshot(hub_env) == before, "no blob, temp file or commit of the failed upload remains"


def test_rejected_lfs_upload_set_from_another_process_fails_at_once(hub_env):
    api = HfApi()
    repo_id = _repo(api)
    head = api.model_info(repo_id).sha
    answer = get_session().post(f"{hub_env.endpoint}/_admin/faults", json={"reject_lfs_uploads": 1})
    assert answer.status_code == 200
    with pytest.raises(RuntimeError, match="Error while uploading 'model.safetensors'") as rejected:
        api.upload_file(path_or_fileobj=os.urandom(4096), path_in_repo="model.safetensors", repo_id=repo_id)
    assert isinstance(rejected.value.__cause__, HfHubHTTPError)
    assert rejected.value.__cause__.response.status_code == 403
    assert hub_env.faults.lfs_uploads_rejected >= 1
    assert api.model_info(repo_id).sha == head
    assert get_session().post(f"{hub_env.endpoint}/_admin/faults", json={"drop_all": 1}).status_code == 400


def test_readers_never_see_a_partial_commit(hub_env):
    api = HfApi()
    repo_id = _repo(api)
    errors, seen = [], set()
    done = threading.Event()

    def read_loop():
        reader = HfApi()
        while not done.is_set():
            try:
                sha = reader.model_info(repo_id).sha
                names = set(reader.list_repo_files(repo_id, revision=sha))
                versions = {name for name in names if name.startswith("part-")}
                if versions:  # the three parts of a commit arrive together or not at all
                    seen.add(len(versions))
            except Exception as error:  # noqa: BLE001 - any failure of a reader is the finding
                errors.append(error)

    reader = threading.Thread(target=read_loop)
    reader.start()
    try:
        for step in range(8):
            api.create_commit(repo_id, commit_message=f"step {step}", operations=[
                CommitOperationAdd(f"part-{i}-{step}.txt", f"{step}".encode()) for i in range(3)
            ])
    finally:
        done.set()
        reader.join()
    assert errors == []
    assert seen and all(count % 3 == 0 for count in seen), seen


def test_transformers_push_to_hub_and_from_pretrained_in_process(hub_env, tmp_path):
    from transformers import AutoModel, AutoTokenizer, BertConfig, BertModel, BertTokenizerFast
    from tokenizers import Tokenizer, models, pre_tokenizers

    torch.manual_seed(0)
    config = BertConfig(vocab_size=32, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=16)
    model = BertModel(config).eval()
    vocab = {token: i for i, token in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world"])}
    backend = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer = BertTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]",
                                  cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    repo_id = f"tester/tiny-bert-{uuid.uuid4().hex[:8]}"
    first = model.push_to_hub(repo_id)
    tokenizer.push_to_hub(repo_id)
    with torch.no_grad():
        model.embeddings.word_embeddings.weight.add_(1.0)
    model.push_to_hub(repo_id)

    pulled_latest = AutoModel.from_pretrained(repo_id).eval()
    pulled_first = AutoModel.from_pretrained(repo_id, revision=first.oid).eval()
    inputs = AutoTokenizer.from_pretrained(repo_id)("hello world", return_tensors="pt")
    with torch.no_grad():
        expected = model(**inputs).last_hidden_state
        delta = (pulled_latest(**inputs).last_hidden_state - expected).abs().max().item()
        first_delta = (pulled_first.embeddings.word_embeddings.weight + 1.0
                       - model.embeddings.word_embeddings.weight).abs().max().item()
    assert delta == 0.0, f"max |Δ| = {delta}"
    assert first_delta == 0.0, f"first push by sha: max |Δ| = {first_delta}"
    assert hf_hub_download(repo_id, "config.json").startswith(str(tmp_path)), "the test's HF_HUB_CACHE is used"
