//! Geo: clients on three continents reach their nearest region; an
//! EU-resident tenant stays in the EU even when that is slower; a client
//! whose nearest region is down is served by the next one, and so is one
//! whose nearest region's health probe answers too late. Clients are placed
//! with the trusted `x-edgegate-client-*` headers.

use crate::client::{CHAT, NEW_YORK, PARIS, Place, SAO_PAULO, SINGAPORE, answered_by, chat_body};
use crate::gateway::keys;
use crate::suite::Outcome;
use crate::target::Target;
use crate::{ensure, ensure_eq};

/// The region that answered a client of `key` at `place`.
async fn region_for(t: &Target, key: &str, place: &Place) -> Result<String, String> {
    let answer = t
        .post(CHAT)
        .key(key)
        .at(place)
        .json(&chat_body("where am I served?"))
        .send()
        .await?
        .expect(200)?;
    Ok(answered_by(&answer))
}

pub async fn nearest_region_on_three_continents(t: &Target) -> Outcome {
    for (place, name, region) in [
        (&NEW_YORK, "New York", "us-east"),
        (&PARIS, "Paris", "eu-west"),
        (&SINGAPORE, "Singapore", "ap-southeast"),
    ] {
        ensure_eq!(region_for(t, keys::GEO, place).await?, region, "{name}");
    }
    Ok(())
}

pub async fn eu_resident_tenant_stays_in_eu(t: &Target) -> Outcome {
    t.backend("eu-west").set_latency(300, 0);
    ensure_eq!(
        region_for(t, keys::GEO, &NEW_YORK).await?,
        "us-east",
        "a tenant without residency in New York"
    );
    for (place, name) in [(&NEW_YORK, "New York"), (&SINGAPORE, "Singapore")] {
        ensure_eq!(
            region_for(t, keys::EU, place).await?,
            "eu-west",
            "the EU tenant's client in {name}, with eu-west slow"
        );
    }
    Ok(())
}

pub async fn failover_when_nearest_region_is_down(t: &Target) -> Outcome {
    ensure_eq!(
        region_for(t, keys::GEO, &SAO_PAULO).await?,
        "sa-east",
        "São Paulo with sa-east up"
    );
    t.backend("sa-east").set_down(true);
    for _ in 0..3 {
        ensure_eq!(
            region_for(t, keys::GEO, &SAO_PAULO).await?,
            "us-east",
            "São Paulo with sa-east down"
        );
    }
    Ok(())
}

pub async fn a_probe_past_its_timeout_takes_the_region_down(t: &Target) -> Outcome {
    // Past the core's 2 s probe timeout, and well within it.
    t.backend("sa-east").set_health_delay(2_500);
    t.backend("ap-southeast").set_health_delay(1_500);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(25);
    loop {
        t.probe_regions().await?;
        if region_for(t, keys::GEO, &SAO_PAULO).await? == "us-east" {
            break;
        }
        ensure!(
            std::time::Instant::now() < deadline,
            "sa-east, whose probe takes 2.5 s, still serves São Paulo after 25 s"
        );
    }
    ensure_eq!(
        region_for(t, keys::GEO, &SINGAPORE).await?,
        "ap-southeast",
        "Singapore, whose region's probe takes 1.5 s"
    );
    Ok(())
}
