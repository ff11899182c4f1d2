//! The tests' EC2: a fleet spec, an SDK client for a local endpoint, and a fake EC2 that
//! records every request body and answers `RunInstances` as a test says. Its own module
//! because the launch, placement and listing tests all share it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_ec2::Client;

use crate::spec::{Ec2Launch, FleetSpec};

pub(super) fn spec() -> FleetSpec {
    FleetSpec {
        name_prefix: "app-tier-".into(),
        stack: "s1".into(),
        tags: vec![
            ("Type".into(), "apptier".into()),
            ("Name".into(), "x".into()),
        ],
        local: None,
        ec2: Some(Ec2Launch {
            image_id: "ami-1".into(),
            instance_types: vec!["t3.micro".into()],
            security_group_ids: vec![],
            subnet_ids: vec![],
            instance_profile: None,
            key_name: None,
            user_data: Some("#!/bin/sh\n".into()),
            root_device_name: Some("/dev/sda1".into()),
            root_volume_gib: None,
        }),
    }
}

pub(super) fn offline_client(endpoint: &str) -> Client {
    let config = aws_sdk_ec2::Config::builder()
        .behavior_version_latest()
        .region(aws_sdk_ec2::config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(aws_sdk_ec2::config::Credentials::new(
            "test", "test", None, None, "static",
        ))
        .retry_config(
            aws_sdk_ec2::config::retry::RetryConfig::standard()
                .with_max_attempts(3)
                .with_initial_backoff(Duration::from_millis(1)),
        )
        .build();
    Client::from_conf(config)
}

pub(super) fn ec2_error(code: &str, message: &str) -> String {
    format!(
        "<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error>\
             </Errors><RequestID>r</RequestID></Response>"
    )
}

pub(super) fn run_instances_ok(id: &str) -> String {
    format!(
        "<RunInstancesResponse xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\">\
             <requestId>r</requestId><reservationId>r-1</reservationId><ownerId>1</ownerId>\
             <instancesSet><item><instanceId>{id}</instanceId><instanceState><code>0</code>\
             <name>pending</name></instanceState></item></instancesSet></RunInstancesResponse>"
    )
}

/// A fake EC2 endpoint: answers `DescribeInstances` with an empty fleet,
/// `DescribeImages` of `ami-1` with a root device of `/dev/xvda` (and of any other
/// image with nothing), and every `RunInstances` as `run` says (from the request
/// body). Records each request body.
pub(super) async fn fake_ec2(
    run: impl Fn(&str) -> (&'static str, String) + Send + 'static,
) -> (String, Arc<Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let seen = bodies.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let body = loop {
                let n = socket.read(&mut chunk).await.unwrap_or(0);
                if n == 0 {
                    break None;
                }
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf).to_string();
                let Some(end) = text.find("\r\n\r\n") else {
                    continue;
                };
                let length = text[..end]
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or(0);
                if buf.len() >= end + 4 + length {
                    break Some(text[end + 4..end + 4 + length].to_owned());
                }
            };
            let Some(body) = body else { continue };
            let (status, xml) = if body.contains("Action=DescribeInstances") {
                (
                        "200 OK",
                        "<DescribeInstancesResponse xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\">\
                         <requestId>r</requestId><reservationSet/></DescribeInstancesResponse>"
                            .to_owned(),
                    )
            } else if body.contains("Action=DescribeImages") {
                let known = form_value(&body, "ImageId.1").as_deref() == Some("ami-1");
                (
                        "200 OK",
                        if known {
                            "<DescribeImagesResponse xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\">\
                             <requestId>r</requestId><imagesSet><item><imageId>ami-1</imageId>\
                             <rootDeviceName>/dev/xvda</rootDeviceName></item></imagesSet>\
                             </DescribeImagesResponse>"
                        } else {
                            "<DescribeImagesResponse xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\">\
                             <requestId>r</requestId><imagesSet/></DescribeImagesResponse>"
                        }
                        .to_owned(),
                    )
            } else {
                run(&body)
            };
            seen.lock().unwrap().push(body);
            let response = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/xml\r\nContent-Length: {}\r\n\
                     Connection: close\r\n\r\n{xml}",
                xml.len()
            );
            let _ = socket.write_all(response.as_bytes()).await;
            let _ = socket.shutdown().await;
        }
    });
    (url, bodies)
}

pub(super) fn form_value(body: &str, key: &str) -> Option<String> {
    body.split('&')
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")).map(str::to_owned))
}
