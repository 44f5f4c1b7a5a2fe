//! Checkpoints in object storage, against a real S3 server (moto) on
//! loopback: written once with create-only puts, so that of two writers
//! of one checkpoint only one commits; damaged ones skipped; an
//! unreachable server named in the error.

use sluice::checkpoint::{Checkpoint, CheckpointStore, Checkpoints, KEEP};
use sluice_objects::S3Store;
use sluice_tests::s3::S3Server;
use std::collections::BTreeMap;
use std::sync::Arc;

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
