//! The course client's one request, for tests: an image posted as the multipart file field
//! `myfile`, as the workload generator sends it.

/// Posts `bytes` as `file_name` in field `myfile` to `url` with `client`; the answer.
pub async fn upload(
    client: &reqwest::Client,
    url: &str,
    file_name: &str,
    bytes: Vec<u8>,
) -> reqwest::Response {
    let part = reqwest::multipart::Part::bytes(bytes).file_name(file_name.to_owned());
    let form = reqwest::multipart::Form::new().part("myfile", part);
    client
        .post(url)
        .multipart(form)
        .send()
        .await
        .unwrap_or_else(|e| panic!("posting {file_name} to {url}: {e}"))
}
