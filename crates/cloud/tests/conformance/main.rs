//! One conformance suite, run against both backends: every behaviour the tiers rely on,
//! asserted the same way on the embedded local backend and on the AWS backend (against a
//! moto server on loopback that `scripts/test` starts and names in `IRAS_TEST_AWS_ENDPOINT`).
//!
//! Each test is an `async fn(&TestEnv)`; the `conformance!` macro instantiates it once per
//! backend as `local::name` and `aws::name`. The aws variants fail (never skip) when no
//! endpoint is configured.

mod bucket;
mod dead_letter;
mod fleet;
mod harness;
mod queue;

macro_rules! conformance {
    ($($module:ident :: $test:ident),* $(,)?) => {
        mod local {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let env = crate::harness::TestEnv::local().await;
                    crate::$module::$test(&env).await;
                    env.cleanup().await;
                }
            )*
        }
        mod aws {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let env = crate::harness::TestEnv::aws().await;
                    crate::$module::$test(&env).await;
                    env.cleanup().await;
                }
            )*
        }
    };
}

conformance!(
    queue::send_receive_delete,
    queue::batch_send_and_receive_up_to_ten,
    queue::invalid_receive_options_are_rejected,
    queue::visibility_expiry_redelivers_with_higher_receive_count,
    queue::change_visibility_to_zero_redelivers_at_once,
    queue::long_poll_returns_as_soon_as_a_message_arrives,
    queue::long_poll_times_out_empty,
    queue::batch_delete_reports_bad_entry_and_deletes_good_ones,
    queue::depth_counts_visible_in_flight_and_delayed,
    queue::dead_letters_after_max_receives,
    queue::oversized_message_is_rejected,
    queue::missing_queue_is_a_typed_error,
    queue::provision_is_idempotent,
    queue::a_queue_made_like_another_shares_its_dead_letter_queue_and_can_be_deleted,
    dead_letter::dead_letter_scan_redrive_and_purge,
    bucket::put_get_overwrite,
    bucket::list_by_prefix,
    bucket::missing_key_is_a_typed_error,
    bucket::rejected_keys_never_reach_the_store,
    bucket::missing_bucket_is_a_typed_error,
    fleet::launch_list_terminate,
    fleet::unready_instances_stay_pending,
);
