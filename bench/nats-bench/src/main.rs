//! nats-bench SERVERS PHASE JOBS_OR_SECONDS PUBLISHERS CONSUMERS BATCH PAYLOAD
//! Phases: `enqueue` (publish JOBS with acks), `drain` (consume + ack until
//! empty), `steady` (both for SECONDS). Prints one JSON object per phase.
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::pull, stream};
use futures::StreamExt;

fn pct(h: &hdrhistogram::Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let a: Vec<String> = std::env::args().collect();
    let (servers, phase, amount) = (a[1].clone(), a[2].clone(), a[3].parse::<u64>()?);
    let (publishers, consumers, batch, payload) =
        (a[4].parse::<usize>()?, a[5].parse::<usize>()?, a[6].parse::<usize>()?, a[7].parse::<usize>()?);
    let client = async_nats::connect(servers.as_str()).await?;
    let js = jetstream::new(client);
    let stream = js
        .get_or_create_stream(stream::Config {
            name: "JOBS".into(),
            subjects: vec!["jobs.>".into()],
            retention: stream::RetentionPolicy::WorkQueue,
            num_replicas: 3,
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await?;
    let consumer: pull::Stream = stream
        .get_or_create_consumer(
            "workers",
            pull::Config { durable_name: Some("workers".into()), ack_policy: jetstream::consumer::AckPolicy::Explicit, ..Default::default() },
        )
        .await?
        .messages()
        .await?;
    drop(consumer);
    let published = Arc::new(AtomicU64::new(0));
    let acked = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let pub_lat = Arc::new(std::sync::Mutex::new(hdrhistogram::Histogram::<u64>::new(3)?));
    let started = Instant::now();
    let mut tasks = Vec::new();
    let publish_limit = match phase.as_str() {
        "enqueue" => amount,
        "steady" => u64::MAX,
        _ => 0,
    };
    for _ in 0..publishers.min(if publish_limit == 0 { 0 } else { usize::MAX }) {
        let (js, published, stop, pub_lat) = (js.clone(), published.clone(), stop.clone(), pub_lat.clone());
        tasks.push(tokio::spawn(async move {
            let body = vec![0u8; payload];
            while !stop.load(Ordering::Relaxed) {
                let n = published.fetch_add(1, Ordering::Relaxed);
                if n >= publish_limit {
                    published.fetch_sub(1, Ordering::Relaxed);
                    return;
                }
                let t = Instant::now();
                match js.publish("jobs.bench", body.clone().into()).await {
                    Ok(ack) => {
                        if ack.await.is_ok() {
                            pub_lat.lock().unwrap().record(t.elapsed().as_micros().max(1) as u64).ok();
                        }
                    }
                    Err(_) => return,
                }
            }
        }));
    }
    let consume = phase != "enqueue";
    for _ in 0..if consume { consumers } else { 0 } {
        let (stream, acked, stop) = (stream.clone(), acked.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let c: jetstream::consumer::Consumer<pull::Config> = stream.get_consumer("workers").await.expect("consumer");
            while !stop.load(Ordering::Relaxed) {
                let mut msgs = match c.fetch().max_messages(batch).expires(Duration::from_millis(200)).messages().await {
                    Ok(m) => m,
                    Err(_) => continue,
                };
                let mut acks = Vec::new();
                while let Some(Ok(m)) = msgs.next().await {
                    acks.push(async move { m.double_ack().await.is_ok() });
                }
                let n = futures::future::join_all(acks).await.into_iter().filter(|ok| *ok).count();
                acked.fetch_add(n as u64, Ordering::Relaxed);
            }
        }));
    }
    let mut idle = (Instant::now(), 0u64);
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let done = acked.load(Ordering::Relaxed);
        let finished = match phase.as_str() {
            "enqueue" => published.load(Ordering::Relaxed) >= amount && tasks.iter().all(|t| t.is_finished()),
            "drain" => {
                if done != idle.1 {
                    idle = (Instant::now(), done);
                }
                idle.0.elapsed() > Duration::from_secs(1)
            }
            _ => started.elapsed() >= Duration::from_secs(amount),
        };
        if finished {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let mut secs = started.elapsed().as_secs_f64();
    if phase == "drain" {
        secs -= 1.0;
    }
    let h = pub_lat.lock().unwrap();
    let out = serde_json::json!({
        "phase": phase,
        "seconds": secs,
        "published": published.load(Ordering::Relaxed),
        "acked": acked.load(Ordering::Relaxed),
        "publish_per_s": published.load(Ordering::Relaxed) as f64 / secs,
        "end_to_end_jobs_per_s": acked.load(Ordering::Relaxed) as f64 / secs,
        "publish_p50_ms": pct(&h, 0.5),
        "publish_p99_ms": pct(&h, 0.99),
    });
    println!("{out}");
    Ok(())
}
