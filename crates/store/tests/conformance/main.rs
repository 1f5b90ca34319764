//! The storage conformance suite: every test runs against SQLite, and against PostgreSQL
//! when `TEST_DATABASE_URL` names a server it may create databases on (each test gets a
//! fresh database, dropped afterwards). Tests go through the `Store` trait only, so a
//! backend passes exactly when it behaves as the server expects.

mod concurrency;
mod connect;
mod console;
mod counts;
mod credentials;
mod desktops;
mod durability;
mod engine;
mod fleet;
mod harness;
mod health;
mod identity;
mod jobs;
mod operations;
mod presence;
mod timeseries;
mod traces;

/// Instantiates each `module::test` once per backend, as `sqlite::test` and
/// `postgres::test`.
macro_rules! conformance {
    ($($module:ident :: $test:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    crate::harness::run(crate::harness::Backend::Sqlite, crate::$module::$test)
                        .await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    crate::harness::run(crate::harness::Backend::Postgres, crate::$module::$test)
                        .await;
                }
            )*
        }
    };
}

conformance! {
    connect::a_database_migrated_by_a_newer_build_is_refused,
    console::sessions_are_found_touched_and_deleted,
    console::fleet_summary_counts_states_versions_and_failures,
    console::desktops_query_filters_sorts_and_pages,
    console::job_progress_counts_sub_jobs_newest_first,
    console::project_users_are_listed_with_their_roles,
    counts::count_by_state_spans_projects_and_statuses,
    identity::domains_and_projects,
    identity::users_roles_keys_and_tokens,
    credentials::failures_lock_after_the_threshold_and_run_out,
    credentials::failures_from_concurrent_callers_all_count,
    credentials::projects_of_a_user_are_those_with_a_role,
    credentials::secret_keys_are_replaced_only_if_unchanged,
    credentials::deleting_a_key_forgets_it_and_its_failures,
    credentials::users_are_disabled_enabled_and_lose_their_tokens,
    credentials::a_role_change_moves_the_revision,
    credentials::enrollment_tokens_are_revoked,
    credentials::deleting_a_desktop_removes_it_and_its_work,
    credentials::changes_are_signalled_to_every_replica,
    desktops::import_keeps_order_and_fills_defaults,
    desktops::list_filters_orders_and_pages,
    desktops::projects_do_not_see_each_other,
    desktops::agent_conditions_follow_the_install,
    jobs::create_writes_the_job_and_its_sub_jobs,
    jobs::unknown_desktops_write_nothing,
    jobs::another_projects_desktop_is_unknown,
    jobs::list_sub_jobs_filters_and_pages_newest_first,
    jobs::delete_removes_only_finished_records,
    jobs::retry_requeues_only_failed_sub_jobs,
    jobs::retry_follows_an_install_in_flight,
    jobs::cancel_ends_only_waiting_and_promotes_a_follower,
    engine::claim_progress_and_finish,
    engine::a_result_reported_twice_is_recorded_once,
    engine::a_failure_explains_the_job,
    engine::second_install_follows_the_one_in_flight,
    engine::followers_mirror_their_leader,
    engine::delivery_timeout_fails_undelivered_work,
    engine::execution_timeout_fails_silent_work,
    engine::followers_take_the_leaders_failure,
    concurrency::one_of_many_concurrent_claims_wins,
    concurrency::concurrent_jobs_for_the_same_desktops_agree_on_leaders,
    concurrency::a_batch_fails_only_the_calls_that_fail,
    concurrency::no_follower_is_orphaned_by_racing_finishes,
    concurrency::deleting_desktops_while_jobs_are_created_leaves_no_orphan,
    concurrency::a_job_creation_waits_for_a_desktop_deletion_under_way,
    durability::data_survives_closing_and_reopening,
    fleet::enrollment_tokens_expire,
    fleet::enroll_creates_a_new_desktop,
    fleet::desktop_bound_tokens_name_a_desktop_of_their_project,
    fleet::enroll_never_takes_over_the_holder_of_a_uid,
    fleet::only_a_desktop_bound_token_claims_an_imported_desktop,
    fleet::concurrent_claims_with_one_token_claim_once,
    fleet::lookups_by_credential_and_uid,
    fleet::facts_and_agent_state,
    fleet::metrics_keep_the_latest_per_desktop,
    fleet::packages_publish_latest_and_get,
    fleet::withdrawn_versions_are_kept_but_not_offered,
    fleet::waiting_work_lists_waiting_leaders_only,
    fleet::running_sub_job_is_the_running_leader,
    health::probe_reads_and_writes,
    health::tables_that_grew_get_fresh_planner_statistics,
    fleet::reports_record_progress_and_results,
    fleet::reports_about_work_not_running_change_nothing,
    fleet::a_mixed_batch_of_reports_applies_in_order,
    fleet::concurrent_reports_all_land,
    presence::connects_and_disconnects_are_recorded,
    presence::last_seen_is_batched_and_only_moves_forward,
    presence::the_status_filter_follows_the_connection,
    operations::operations_record_versions_and_refuse_other_work_in_flight,
    operations::an_install_of_the_newest_version_reads_it_when_written,
    operations::max_concurrency_holds_the_rest_until_slots_free,
    operations::max_errors_stops_the_targets_not_started,
    operations::retry_takes_only_failed_invocations_back,
    operations::a_successful_rollback_marks_what_it_undid,
    operations::invocations_list_filters_pages_and_forgets_old_ones,
    operations::max_concurrency_holds_under_racing_sweeps_and_claims,
    timeseries::metric_ingest_writes_series_points_and_the_latest_report,
    timeseries::metric_rollups_are_exact_once_and_retention_keeps_what_is_not_rolled_up,
    timeseries::metric_rollup_steps_are_bounded,
    timeseries::metric_series_list_filters_orders_and_pages,
    traces::a_change_and_its_trace_commit_together,
    traces::a_trace_completed_before_its_write_commits_with_the_job_it_names,
    traces::a_failed_change_leaves_no_trace_and_the_draft_open,
    traces::concurrent_changes_chain_without_gaps,
    traces::traces_filter_page_and_stay_in_their_project,
    traces::tampering_is_named_by_verify,
    traces::pruning_a_sealed_prefix_still_verifies,
    traces::a_trace_that_cannot_be_written_fails_its_change,
    traces::a_job_records_its_end_once_with_the_change_that_ended_it,
}
