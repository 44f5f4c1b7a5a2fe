//! Object storage against a real S3 server (moto) on loopback.
//! Checkpoints: written once with create-only puts, so that of two
//! writers of one checkpoint only one commits; damaged ones skipped; an
//! unreachable server named in the error. File outputs: what a local run
//! writes, exactly once, the `_SUCCESS` marker deciding. File sources:
//! each object once through crashes and outages, streamed in chunks.

use sluice::checkpoint::{Checkpoint, CheckpointStore, Checkpoints, KEEP};
use sluice_objects::{S3Files, S3Store, S3Url};
use sluice_tests::brokers::{
    assert_logged, check_output, finish, kill_nine_runs, seq_lines, spawn_logged, totals_job,
};
use sluice_tests::s3::S3Server;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn cp(t: i64, state: u8) -> Checkpoint {
    Checkpoint {
        graph: "g".to_string(),
        batch_time: t,
        batch_index: (t / 1000) as u64,
        first_batch_time: 1000,
        plugins: BTreeMap::new(),
        sources: vec![vec![1, 2, 3]],
        state: BTreeMap::from([(1, vec![state; 64])]),
        shards: BTreeMap::new(),
    }
}

#[test]
fn checkpoints_in_s3_are_kept_written_once_and_damaged_ones_skipped() {
    let s3 = S3Server::start();
    s3.create_bucket("ckpts");
    let logs = tempfile::tempdir().expect("temp dir");
    let bucket = s3.bucket("ckpts", "jobs/wc");
    let store = Arc::new(S3Store::new(bucket.clone()));
    let ck = Checkpoints::with_store(logs.path(), store.clone()).expect("checkpoints");
    assert!(ck.latest().expect("latest").is_none(), "an empty prefix");
    for t in 1..=12 {
        ck.write(&cp(t * 1000, 1)).expect("write");
    }
    let names = store.list("checkpoint-").expect("list");
    assert_eq!(names.len(), KEEP, "{names:?}");
    let (latest, skipped) = ck.latest().expect("latest").expect("a checkpoint");
    assert_eq!((latest, skipped.len()), (cp(12_000, 1), 0));

    // The same checkpoint again (a re-run batch) is no error; other
    // content for the same batch is another writer, refused.
    ck.write(&cp(12_000, 1)).expect("the same again");
    let e = ck.write(&cp(12_000, 2)).unwrap_err().to_string();
    assert!(
        e.contains("s3://ckpts/jobs/wc/checkpoint-12000") && e.contains("another process"),
        "{e}"
    );

    // A truncated newest checkpoint: the one before it, with the reason.
    let bytes = bucket.get("checkpoint-12000").expect("get").expect("there");
    bucket.delete("checkpoint-12000").expect("delete");
    assert!(
        bucket
            .put_if_absent("checkpoint-12000", &bytes[..bytes.len() / 2])
            .expect("put")
    );
    let (latest, skipped) = ck.latest().expect("latest").expect("a checkpoint");
    assert_eq!(latest.batch_time, 11_000);
    assert!(skipped[0].reason.contains("truncated"), "{skipped:?}");
    // Set aside, it is kept as `.damaged` and batch 12 can be written again.
    ck.set_aside(&skipped).expect("set aside");
    ck.write(&cp(12_000, 1)).expect("rewrite");
    assert!(
        bucket
            .get("checkpoint-12000.damaged")
            .expect("get")
            .is_some()
    );
    assert_eq!(ck.latest().expect("latest").expect("one").0, cp(12_000, 1));
}

#[test]
fn of_writers_racing_for_one_checkpoint_object_one_wins() {
    let s3 = S3Server::start();
    s3.create_bucket("race");
    for round in 0..3 {
        let name = format!("checkpoint-{round}");
        let barrier = Arc::new(std::sync::Barrier::new(8));
        let writers: Vec<_> = (0..8u8)
            .map(|i| {
                // Each writer its own client, as two processes would have.
                let bucket = s3.bucket("race", "job");
                let (barrier, name) = (barrier.clone(), name.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    bucket.put_if_absent(&name, &[i; 32]).expect("put")
                })
            })
            .collect();
        let won: Vec<bool> = writers
            .into_iter()
            .map(|w| w.join().expect("writer"))
            .collect();
        assert_eq!(won.iter().filter(|w| **w).count(), 1, "{won:?}");
        let winner = won.iter().position(|w| *w).expect("a winner") as u8;
        let stored = s3.bucket("race", "job").get(&name).expect("get");
        assert_eq!(stored, Some(vec![winner; 32]), "the winner's object stays");
    }
}

#[test]
fn an_unreachable_object_store_is_an_error_naming_the_object() {
    let nothing_there = sluice_objects::S3Settings {
        endpoint: Some(format!(
            "http://127.0.0.1:{}",
            sluice_tests::brokers::free_port()
        )),
        ..S3Server::start().settings()
    };
    let url = sluice_objects::S3Url::parse("s3://gone/job").expect("url");
    let bucket = sluice_objects::Bucket::open(&url, &nothing_there).expect("a client");
    let e = bucket
        .put_if_absent("checkpoint-1", b"x")
        .unwrap_err()
        .to_string();
    assert!(e.contains("writing s3://gone/job/checkpoint-1"), "{e}");
    let e = bucket.list("checkpoint-").unwrap_err().to_string();
    assert!(e.contains("listing s3://gone/job/"), "{e}");
}

/// `text_files` outputs to S3 through the CLI (the `saveAsTextFiles`
/// golden case with its prefixes in a bucket) hold exactly the objects,
/// names and lines the same job writes to a local directory.
#[test]
fn text_files_in_s3_hold_what_local_ones_do() {
    let s3 = S3Server::start();
    s3.create_bucket("outs");
    let local = tempfile::tempdir().expect("temp dir");
    sluice_tests::run_job(&sluice_tests::case_job("saveAsTextFiles", local.path()));
    let mut want: BTreeMap<String, String> = BTreeMap::new();
    let out = local.path().join("out");
    for d in std::fs::read_dir(&out).expect("out") {
        let d = d.expect("entry").path();
        for f in std::fs::read_dir(&d).expect("batch dir") {
            let f = f.expect("entry").path();
            // Hadoop's local file system writes `.NAME.crc` beside each
            // file; S3 (Hadoop's S3A too) keeps no checksum files.
            let name = f.file_name().map(|n| n.to_string_lossy().into_owned());
            if name.is_some_and(|n| n.starts_with('.') && n.ends_with(".crc")) {
                continue;
            }
            let key = f
                .strip_prefix(local.path())
                .expect("under")
                .to_string_lossy();
            want.insert(key.into_owned(), std::fs::read_to_string(&f).expect("part"));
        }
    }
    assert!(want.len() > 6, "the local run wrote batches: {want:?}");

    let remote = tempfile::tempdir().expect("temp dir");
    let job = sluice_tests::case_job("saveAsTextFiles", remote.path());
    let text = std::fs::read_to_string(&job).expect("job");
    let text = text.replace("prefix = \"out/", "prefix = \"s3://outs/out/") + &s3.spec_section();
    std::fs::write(&job, text).expect("job");
    let explained = sluice_tests::run_ok(
        std::process::Command::new(sluice_tests::sluice_bin())
            .arg("explain")
            .arg(&job),
    );
    assert!(
        explained.contains("save_as_text_files s3://outs/out/counts txt"),
        "{explained}"
    );
    sluice_tests::run_job(&job);
    let keys = s3.keys("outs", "");
    assert_eq!(keys, want.keys().cloned().collect::<Vec<_>>());
    let bucket = s3.bucket("outs", "");
    for (key, text) in &want {
        let got = bucket.get(key).expect("get").expect("the object");
        assert_eq!(String::from_utf8(got).expect("utf-8"), *text, "{key}");
    }
    assert!(
        !remote.path().join("out").exists(),
        "nothing written to the local disk"
    );
}

/// The exactly-once rules of file outputs in object storage: a batch
/// whose earlier run died before its marker keeps the parts it wrote and
/// gets the rest and the marker; a batch run again once its marker is
/// there writes nothing; object files are Sluice's object format.
#[test]
fn a_rerun_batch_in_s3_finds_its_marker_and_writes_nothing() {
    use sluice::sink::{Output, PartFormat};
    use sluice::{BatchTime, rdd::Rdd};
    use sluice_sdk::{Batch, Column};
    let s3 = S3Server::start();
    s3.create_bucket("outs");
    let rdd = |words: &[&str]| {
        let mut c = Column::new();
        for w in words {
            c.push(w).expect("push");
        }
        Rdd {
            partitions: vec![Batch::from_values(c), Batch::default()],
        }
    };
    let url = S3Url::parse("s3://outs/jobs/counts").expect("url");
    let mut out = S3Files::new(&url, &s3.settings(), PartFormat::Text, Some("txt")).expect("out");
    assert_eq!(
        out.describe(),
        "save_as_text_files s3://outs/jobs/counts txt"
    );
    let bucket = s3.bucket("outs", "jobs");
    let text = |name: &str| {
        bucket
            .get(name)
            .expect("get")
            .map(|b| String::from_utf8(b).expect("utf-8"))
    };
    // A run that died after writing its first part.
    assert!(
        bucket
            .put_if_absent("counts-1000.txt/part-00000", b"a\n")
            .expect("put")
    );
    out.emit(BatchTime(1000), 0, &rdd(&["a"])).expect("emit");
    assert_eq!(text("counts-1000.txt/part-00000").as_deref(), Some("a\n"));
    assert_eq!(text("counts-1000.txt/part-00001").as_deref(), Some(""));
    assert_eq!(text("counts-1000.txt/_SUCCESS").as_deref(), Some(""));
    // Run again (say, with other input in three partitions): its marker
    // is there, nothing is written (no part-00002 either).
    let mut other = rdd(&["z", "y"]);
    other.partitions.push(Batch::default());
    out.emit(BatchTime(1000), 0, &other).expect("emit");
    assert_eq!(text("counts-1000.txt/part-00000").as_deref(), Some("a\n"));
    out.emit(BatchTime(2000), 1, &rdd(&["b", "c"]))
        .expect("emit");
    assert_eq!(
        text("counts-2000.txt/part-00000").as_deref(),
        Some("b\nc\n")
    );
    assert_eq!(
        s3.keys("outs", "jobs/"),
        [
            "jobs/counts-1000.txt/_SUCCESS",
            "jobs/counts-1000.txt/part-00000",
            "jobs/counts-1000.txt/part-00001",
            "jobs/counts-2000.txt/_SUCCESS",
            "jobs/counts-2000.txt/part-00000",
            "jobs/counts-2000.txt/part-00001",
        ]
    );

    // Object files read back with Sluice's reader.
    let url = S3Url::parse("s3://outs/objs").expect("url");
    let mut out = S3Files::new(&url, &s3.settings(), PartFormat::Objects, None).expect("out");
    out.emit(BatchTime(3000), 2, &rdd(&["x", "y"]))
        .expect("emit");
    let local = tempfile::tempdir().expect("temp dir");
    let root = s3.bucket("outs", "");
    for name in ["part-00000", "part-00001", "_SUCCESS"] {
        let bytes = root
            .get(&format!("objs-3000/{name}"))
            .expect("get")
            .expect("the object");
        std::fs::write(local.path().join(name), bytes).expect("write");
    }
    let elements = sluice::sink::objects::read_object_dir(local.path()).expect("read back");
    assert_eq!(elements.len(), 2, "{elements:?}");

    // A prefix without a name for the batches' directories.
    let e = S3Files::new(
        &S3Url::parse("s3://outs").expect("url"),
        &s3.settings(),
        PartFormat::Text,
        None,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("s3://outs/") && e.contains("NAME"), "{e}");
}

/// Objects `obj-NNN.txt` holding sequence lines 50 × `objects`.
fn put_seq_objects(
    bucket: &sluice_objects::Bucket,
    objects: std::ops::Range<u64>,
    pause: Duration,
) {
    for o in objects {
        let lines: Vec<String> = seq_lines(o * 50..(o + 1) * 50)
            .into_iter()
            .map(|l| String::from_utf8(l).expect("utf-8"))
            .collect();
        let body = lines.join("\n") + "\n";
        assert!(
            bucket
                .put_if_absent(&format!("obj-{o:03}.txt"), body.as_bytes())
                .expect("put")
        );
        std::thread::sleep(pause);
    }
}

/// `text_files` on S3 (Spark's `textFileStream`) through the CLI with
/// checkpoints: objects put while the job runs are each counted exactly
/// once — across six `kill -9`s and an outage of the store itself (the
/// S3 server killed and started again: reported, retried, nothing lost);
/// an object present at start, one in a nested folder and a `_SUCCESS`
/// marker are never read.
#[test]
fn objects_in_s3_are_read_once_through_kill_nine_and_an_outage() {
    let dir = tempfile::tempdir().expect("temp dir");
    let s3 = S3Server::start();
    s3.create_bucket("inbox");
    let bucket = s3.bucket("inbox", "drop");
    assert!(bucket.put_if_absent("old.txt", b"old\n").expect("put"));
    let job = totals_job(
        dir.path(),
        "s3files",
        "type = \"text_files\"\npath = \"s3://inbox/drop/\"\nmax_files = 4",
        None,
    );
    let spec = std::fs::read_to_string(&job).expect("job") + &s3.spec_section();
    std::fs::write(&job, spec).expect("job");
    let ck = dir.path().join("ck");
    let out = dir.path().join("out.jsonl");

    let mut child = spawn_logged(&job, &ck, dir.path());
    let deadline = Instant::now() + Duration::from_secs(30);
    while !out.exists() {
        assert!(Instant::now() < deadline, "the job produced no batch");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    put_seq_objects(&bucket, 0..10, Duration::ZERO);
    for (name, text) in [("nested/x.txt", "nested\n"), ("_SUCCESS", "marker\n")] {
        assert!(bucket.put_if_absent(name, text.as_bytes()).expect("put"));
    }
    std::thread::sleep(Duration::from_millis(300));
    child.kill().expect("kill -9");
    child.wait().expect("wait");

    let more = {
        let bucket = bucket.clone();
        std::thread::spawn(move || put_seq_objects(&bucket, 10..40, Duration::from_millis(60)))
    };
    kill_nine_runs(&job, &ck, 6, 200, 400);
    more.join().expect("putting objects");

    let child = spawn_logged(&job, &ck, dir.path());
    std::thread::sleep(Duration::from_millis(800));
    let s3 = s3.outage(Duration::from_millis(2500), "inbox");
    put_seq_objects(&s3.bucket("inbox", "drop"), 40..50, Duration::ZERO);
    finish(child, dir.path(), 2500, "s3 files");
    assert_eq!(check_output(dir.path(), "s3 files"), 2500);
    assert_logged(dir.path(), "tried again next batch");
}

/// The file source's reads on S3: a large object streamed in many
/// chunks, whole; an object deleted between the listing and the read is
/// "gone", not an error; names in nested folders and markers not listed.
#[test]
fn s3_objects_are_streamed_in_chunks_and_a_deleted_one_is_gone() {
    use sluice::receiver::file_store::FileStore;
    use std::ffi::OsStr;
    let s3 = S3Server::start();
    s3.create_bucket("inbox");
    let bucket = s3.bucket("inbox", "big");
    let line = "0123456789abcdef".repeat(8) + "\n";
    let body = line.repeat(256 * 1024); // 33 MiB
    assert!(
        bucket
            .put_if_absent("large.txt", body.as_bytes())
            .expect("put")
    );
    assert!(
        bucket
            .put_if_absent("gone.txt", b"soon gone\n")
            .expect("put")
    );
    assert!(bucket.put_if_absent("_SUCCESS", b"").expect("put"));
    assert!(bucket.put_if_absent("sub/x.txt", b"x\n").expect("put"));
    let store = sluice_objects::S3Dir::new(
        &S3Url::parse("s3://inbox/big/").expect("url"),
        &s3.settings(),
    )
    .expect("store");
    assert_eq!(store.describe(), "s3://inbox/big/");
    let mut names: Vec<String> = store
        .list()
        .expect("list")
        .into_iter()
        .map(|(_, n)| n.to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["gone.txt", "large.txt"]);
    let (mut chunks, mut bytes, mut largest) = (0, 0, 0);
    let mut check = xxhash_rust::xxh3::Xxh3::new();
    let found = store
        .read(OsStr::new("large.txt"), &mut |c| {
            chunks += 1;
            bytes += c.len();
            largest = largest.max(c.len());
            check.update(c);
            Ok(())
        })
        .expect("read");
    assert!(found);
    assert_eq!(bytes, body.len());
    assert_eq!(check.digest(), xxhash_rust::xxh3::xxh3_64(body.as_bytes()));
    assert!(chunks > 8, "{chunks} chunks, the largest {largest} bytes");
    bucket.delete("gone.txt").expect("delete");
    let found = store
        .read(OsStr::new("gone.txt"), &mut |_| panic!("no bytes"))
        .expect("no error");
    assert!(!found, "a deleted object is gone");
}

/// Keys the S3 server refuses: a file source, a file output and a
/// checkpoint store in that bucket each stop the job with an error naming
/// the bucket, rather than retrying for ever.
#[test]
fn refused_credentials_stop_the_job_naming_the_bucket() {
    let s3 = S3Server::start_refusing_every_key(&["locked"]);
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("q.json"), r#"[["a b"], ["c"]]"#).expect("queue");
    let queue = "type = \"queue\"\npath = \"q.json\"\n";
    for (what, job, source, output) in [
        (
            "a file source",
            "",
            "type = \"text_files\"\npath = \"s3://locked/in/\"\n",
            "type = \"pprint\"\n",
        ),
        (
            "a file output",
            "",
            queue,
            "type = \"text_files\"\nprefix = \"s3://locked/out/lines\"\n",
        ),
        (
            "a checkpoint store",
            "checkpoint = \"s3://locked/ck\"\ncheckpoint_logs = \"logs\"\n",
            queue,
            "type = \"pprint\"\n",
        ),
    ] {
        let spec = format!(
            "[job]\nname = \"locked\"\nbatch_interval = \"100ms\"\n{job}[sources.lines]\n{source}[[outputs]]\nstream = \"lines\"\n{output}{}",
            s3.spec_section()
        );
        let path = dir.path().join("job.toml");
        std::fs::write(&path, spec).expect("job");
        let run = std::process::Command::new(sluice_tests::sluice_bin())
            .args(["run", "--batches", "20"])
            .arg(&path)
            .env("SLUICE_CACHE_DIR", sluice_tests::cache_dir())
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(!run.status.success(), "{what}: the job failed");
        assert!(
            stderr.contains("refused the credentials") && stderr.contains("bucket `locked`"),
            "{what}: {stderr}"
        );
    }
}

/// The S3 server down when the job starts: the job runs, reports that it
/// cannot list the prefix, and once the server answers reads every object
/// put since the job started, once.
#[test]
fn a_file_source_started_while_s3_is_down_catches_up() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = sluice_tests::brokers::free_port();
    let job = totals_job(
        dir.path(),
        "s3late",
        "type = \"text_files\"\npath = \"s3://inbox/drop/\"",
        None,
    );
    let section = format!(
        "[object_store]\nendpoint = \"http://127.0.0.1:{port}\"\nregion = \"us-east-1\"\naccess_key_id = \"sluice-test\"\nsecret_access_key = \"sluice-test-secret\"\n"
    );
    let spec = std::fs::read_to_string(&job).expect("job") + &section;
    std::fs::write(&job, spec).expect("job");
    let ck = dir.path().join("ck");
    let mut child = spawn_logged(&job, &ck, dir.path());
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        child.try_wait().expect("wait").is_none(),
        "the job runs without its store"
    );
    assert_logged(dir.path(), "cannot list the watched files at start");
    let s3 = S3Server::start_on(port);
    s3.create_bucket("inbox");
    put_seq_objects(&s3.bucket("inbox", "drop"), 0..5, Duration::ZERO);
    finish(child, dir.path(), 250, "s3 down at start");
    assert_eq!(check_output(dir.path(), "s3 down at start"), 250);
}

/// The S3 server of a job's checkpoints killed mid-job and started again
/// (empty: moto keeps objects in memory): the checkpoint writes that fail
/// meanwhile are retried (by the client, then before the next batch), the
/// job goes on and every record is counted once.
#[test]
fn a_checkpoint_store_down_mid_job_is_retried_and_loses_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let s3 = S3Server::start();
    s3.create_bucket("ckpts");
    let batches: Vec<Vec<String>> = (0..60u64)
        .map(|b| {
            seq_lines(b * 10..(b + 1) * 10)
                .into_iter()
                .map(|l| String::from_utf8(l).expect("utf-8"))
                .collect()
        })
        .collect();
    std::fs::write(
        dir.path().join("input.json"),
        serde_json::to_string(&batches).expect("json"),
    )
    .expect("input");
    let job = totals_job(
        dir.path(),
        "s3ck",
        "type = \"queue\"\npath = \"input.json\"",
        None,
    );
    let spec = std::fs::read_to_string(&job)
        .expect("job")
        .replace(
            "batch_interval = \"50ms\"\n",
            "batch_interval = \"50ms\"\nclock = \"system\"\ncheckpoint = \"s3://ckpts/job\"\ncheckpoint_logs = \"logs\"\n",
        )
        + &s3.spec_section();
    std::fs::write(&job, spec).expect("job");
    let run = std::process::Command::new(sluice_tests::sluice_bin())
        .arg("run")
        .arg(&job)
        .env("SLUICE_CACHE_DIR", sluice_tests::cache_dir())
        .stdout(std::process::Stdio::null())
        .stderr(sluice_tests::brokers::log_file(dir.path()))
        .spawn()
        .expect("spawn");
    std::thread::sleep(Duration::from_millis(800));
    let s3 = s3.outage(Duration::from_millis(1500), "ckpts");
    let out = run.wait_with_output().expect("wait");
    assert!(out.status.success(), "the job finished: {}", out.status);
    assert_eq!(check_output(dir.path(), "checkpoints down"), 600);
    let keys = s3.keys("ckpts", "job/");
    assert!(
        keys.iter().any(|k| k.starts_with("job/checkpoint-")),
        "checkpoints written again once the store came back: {keys:?}"
    );
}

/// The README's S3 word count (`examples/wordcount-s3.toml`) against the
/// test's own S3 server: an object uploaded while it runs is counted, and
/// the batch's counts land in the bucket with their marker.
#[test]
fn the_s3_word_count_example_counts_an_uploaded_object() {
    let s3 = S3Server::start();
    s3.create_bucket("words");
    let dir = tempfile::tempdir().expect("temp dir");
    let text = sluice_tests::example_spec(
        "wordcount-s3.toml",
        &[
            ("http://127.0.0.1:9000", &s3.endpoint()),
            ("\"../target/s3-wordcount-logs\"", "\"logs\""),
        ],
    );
    let job = dir.path().join("wordcount-s3.toml");
    std::fs::write(&job, text).expect("job");
    let mut child = std::process::Command::new(sluice_tests::sluice_bin())
        .arg("run")
        .arg(&job)
        .env("SLUICE_CACHE_DIR", sluice_tests::cache_dir())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("stderr.log")).expect("log"))
        .spawn()
        .expect("spawn");
    // Running once its first checkpoint is in the bucket.
    let deadline = Instant::now() + Duration::from_secs(30);
    while s3.keys("words", "checkpoints/").is_empty() {
        assert!(
            Instant::now() < deadline,
            "no checkpoint in 30 s: {}",
            std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    s3.bucket("words", "incoming")
        .put_if_absent("hamlet.txt", b"to be or not to be\n")
        .expect("upload");
    let counts = s3.bucket("words", "counts");
    let found = loop {
        assert!(Instant::now() < deadline, "no counts in 30 s");
        let done: Vec<String> = (s3.keys("words", "counts/").into_iter())
            .filter_map(|k| k.strip_suffix("/_SUCCESS").map(str::to_string))
            .collect();
        let text: String = (done.iter())
            .map(|d| d.strip_prefix("counts/").unwrap_or(d))
            .flat_map(|d| (0..2).map(move |p| format!("{d}/part-0000{p}")))
            .filter_map(|part| counts.get(&part).ok().flatten())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .collect();
        if text.contains("('to', 2)") {
            break text;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    child.kill().expect("kill");
    child.wait().expect("wait");
    for want in ["('to', 2)", "('be', 2)", "('or', 1)", "('not', 1)"] {
        assert!(found.contains(want), "{want} in {found}");
    }
}

/// Keys and region from the AWS shared profile files, the spec giving
/// only the endpoint and the environment no keys: the job's output
/// reaches the bucket with the keys of the profile `AWS_PROFILE` names
/// (without any, the client would have none to sign with).
#[test]
fn keys_come_from_the_aws_profile_files() {
    let s3 = S3Server::start();
    s3.create_bucket("outs");
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("credentials"),
        "[sluice]\naws_access_key_id = AKIPROFILE\naws_secret_access_key = from-the-profile\n",
    )
    .expect("credentials");
    std::fs::write(
        dir.path().join("config"),
        "[profile sluice]\nregion = us-east-1\n",
    )
    .expect("config");
    let job = sluice_tests::case_job("saveAsTextFiles", dir.path());
    let text = std::fs::read_to_string(&job)
        .expect("job")
        .replace("prefix = \"out/", "prefix = \"s3://outs/out/")
        + &format!("[object_store]\nendpoint = \"{}\"\n", s3.endpoint());
    std::fs::write(&job, text).expect("job");
    sluice_tests::run_ok(
        std::process::Command::new(sluice_tests::sluice_bin())
            .arg("run")
            .arg(&job)
            .env("SLUICE_CACHE_DIR", sluice_tests::cache_dir())
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                dir.path().join("credentials"),
            )
            .env("AWS_CONFIG_FILE", dir.path().join("config"))
            .env("AWS_PROFILE", "sluice")
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("AWS_REGION"),
    );
    assert!(
        s3.keys("outs", "out/")
            .iter()
            .any(|k| k.ends_with("/_SUCCESS")),
        "the batches are in the bucket"
    );
}
