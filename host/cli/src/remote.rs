//! Commands against a running `sluice serve` over its HTTP API: `sluice
//! submit`, `sluice job ...` and `sluice tenant ...`.

use crate::client::{self, Body};
use crate::{JobCommand, Remote, TenantCommand};
use anyhow::{Context, Result, bail};
use std::path::Path;

/// `sluice submit`: uploads the spec's plugins and files and starts the job.
pub(crate) fn submit(spec: &Path, plugin: &[String], remote: Remote) -> Result<()> {
    let client = remote.client()?;
    let job = client::submit(&client, spec, plugin)?;
    let name = job["name"].as_str().unwrap_or("?");
    println!("{}", serde_json::to_string_pretty(&job)?);
    eprintln!(
        "job `{name}` submitted; web UI: {}/jobs/{name}/?token=…",
        client.base()
    );
    Ok(())
}

/// `sluice job ...` (a tenant's token).
pub(crate) fn job_command(command: JobCommand, remote: Remote) -> Result<()> {
    let client = remote.client()?;
    let print = |v: &serde_json::Value| -> Result<()> {
        println!("{}", serde_json::to_string_pretty(v)?);
        Ok(())
    };
    match command {
        JobCommand::List => print(&client.call("GET", "/api/jobs", Body::None)?.1),
        JobCommand::Show { job } => print(
            &client
                .call("GET", &format!("/api/jobs/{job}"), Body::None)?
                .1,
        ),
        JobCommand::Stop { job } => print(
            &client
                .call("POST", &format!("/api/jobs/{job}/stop"), Body::None)?
                .1,
        ),
        JobCommand::Start { job } => print(
            &client
                .call("POST", &format!("/api/jobs/{job}/start"), Body::None)?
                .1,
        ),
        JobCommand::Delete { job } => {
            client.call("DELETE", &format!("/api/jobs/{job}"), Body::None)?;
            eprintln!("job `{job}` deleted");
            Ok(())
        }
        JobCommand::Swap { job, plugin, to } => {
            let v = client::swap(&client, &job, &plugin, &to)?;
            print(&v)?;
            match v["outcome"].as_str() {
                Some("applied") | Some("pending") => Ok(()),
                _ => bail!(
                    "the swap was rolled back: {}",
                    v["error"].as_str().unwrap_or("?")
                ),
            }
        }
        JobCommand::Outputs { job, n } => {
            let (_, v) =
                client.call("GET", &format!("/api/jobs/{job}/outputs?n={n}"), Body::None)?;
            for block in v["pprint"].as_array().into_iter().flatten() {
                print!("{}", block.as_str().unwrap_or_default());
            }
            Ok(())
        }
        JobCommand::Logs { job } => print(
            &client
                .call("GET", &format!("/api/jobs/{job}/logs"), Body::None)?
                .1,
        ),
    }
}

/// `sluice tenant ...` (the admin token).
pub(crate) fn tenant_command(command: TenantCommand, remote: Remote) -> Result<()> {
    let client = remote.client()?;
    match command {
        TenantCommand::Create {
            name,
            limits,
            grant_socket,
        } => {
            let mut limits: serde_json::Value = match limits {
                Some(l) => serde_json::from_str(&l).context("--limits: not JSON")?,
                None => serde_json::json!({}),
            };
            if !grant_socket.is_empty() {
                limits["sockets"] = serde_json::json!(grant_socket);
            }
            let body = serde_json::json!({"name": name, "limits": limits});
            let (_, v) = client.call("POST", "/api/tenants", Body::Json(&body))?;
            eprintln!("tenant `{name}` created; its token:");
            println!("{}", v["token"].as_str().unwrap_or_default());
        }
        TenantCommand::List => {
            let (_, v) = client.call("GET", "/api/tenants", Body::None)?;
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        TenantCommand::Token { name } => {
            let (_, v) = client.call("POST", &format!("/api/tenants/{name}/tokens"), Body::None)?;
            println!("{}", v["token"].as_str().unwrap_or_default());
        }
        TenantCommand::Delete { name } => {
            client.call("DELETE", &format!("/api/tenants/{name}"), Body::None)?;
            eprintln!("tenant `{name}` deleted");
        }
    }
    Ok(())
}
