//! A command to a Durable Object: its JSON posted to the object of `name`,
//! its JSON answer read back (a non-200 is an error carrying its text).

use serde::Serialize;
use serde::de::DeserializeOwned;
use worker::wasm_bindgen::JsValue;
use worker::{Method, ObjectNamespace, Request, RequestInit, Result};

pub async fn call<T: DeserializeOwned>(
    objects: &ObjectNamespace,
    name: &str,
    url: &str,
    command: &impl Serialize,
) -> Result<T> {
    let stub = objects.get_by_name(name)?;
    let body = serde_json::to_string(command)?;
    let mut init = RequestInit::new();
    init.with_method(Method::Post)
        .with_body(Some(JsValue::from_str(&body)));
    let request = Request::new_with_init(url, &init)?;
    let mut response = stub.fetch_with_request(request).await?;
    if response.status_code() != 200 {
        let text = response.text().await.unwrap_or_default();
        return Err(worker::Error::RustError(format!(
            "{url} answered {}: {text}",
            response.status_code()
        )));
    }
    response.json::<T>().await
}
