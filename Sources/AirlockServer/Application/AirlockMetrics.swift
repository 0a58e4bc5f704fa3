import AirlockCore
import Foundation
import Prometheus

/// The broker's Prometheus metrics, rendered by `GET /metrics`.
final class AirlockMetrics: Sendable {
    let registry = PrometheusCollectorRegistry()
    let uploads: Counter
    let uploadBytes: Counter
    let uploadsRefused: Counter
    let verdicts: [Verdict.Kind: Counter]
    /// `airlock_content_class_total{class}`, made once: a registry lookup per upload cost more than the count.
    let contentClasses: [ContentClass: Counter]
    let scanDuration: DurationHistogram
    let downloads: Counter
    let downloadBytes: Counter
    let tokenRejections: Counter
    let webhooks: WebhookMetrics

    init() {
        self.uploads = self.registry.makeCounter(
            descriptor: MetricNameDescriptor(
                namespace: "airlock",
                metricName: "uploads",
                unitName: "total",
                helpText: "Files handed off and inspected."
            )
        )
        self.uploadBytes = self.registry.makeCounter(
            descriptor: MetricNameDescriptor(
                namespace: "airlock",
                metricName: "upload_bytes",
                unitName: "total",
                helpText: "Bytes received in hand-offs."
            )
        )
        self.uploadsRefused = self.registry.makeCounter(
            descriptor: MetricNameDescriptor(
                namespace: "airlock",
                metricName: "uploads_refused",
                unitName: "total",
                helpText: "Uploads refused (native API and XEP-0363), for any reason; airlock_refusals_total says which."
            )
        )
        var verdicts: [Verdict.Kind: Counter] = [:]
        for kind in Verdict.Kind.allCases {
            verdicts[kind] = self.registry.makeCounter(
                descriptor: MetricNameDescriptor(namespace: "airlock", metricName: "verdicts", unitName: "total", helpText: "Verdicts by kind."),
                labels: [("verdict", kind.rawValue)]
            )
        }
        self.verdicts = verdicts
        var contentClasses: [ContentClass: Counter] = [:]
        for contentClass in ContentClass.allCases {
            contentClasses[contentClass] = self.registry.makeCounter(
                descriptor: MetricNameDescriptor(
                    namespace: "airlock",
                    metricName: "content_class",
                    unitName: "total",
                    helpText: "Uploads recorded, by content class: inspected, or opaque (untyped random bytes that no scanner can see into)."
                ),
                labels: [("class", contentClass.rawValue)]
            )
        }
        self.contentClasses = contentClasses
        self.scanDuration = self.registry.makeDurationHistogram(
            descriptor: MetricNameDescriptor(
                namespace: "airlock",
                metricName: "inspection_duration",
                unitName: "seconds",
                helpText: "Time from the last byte received to the verdict."
            ),
            buckets: [.milliseconds(5), .milliseconds(25), .milliseconds(100), .milliseconds(500), .seconds(2), .seconds(10), .seconds(60)]
        )
        self.downloads = self.registry.makeCounter(
            descriptor: MetricNameDescriptor(namespace: "airlock", metricName: "downloads", unitName: "total", helpText: "Downloads served.")
        )
        self.downloadBytes = self.registry.makeCounter(
            descriptor: MetricNameDescriptor(
                namespace: "airlock",
                metricName: "download_bytes",
                unitName: "total",
                helpText: "Bytes served to recipients."
            )
        )
        self.tokenRejections = self.registry.makeCounter(
            descriptor: MetricNameDescriptor(
                namespace: "airlock",
                metricName: "token_rejections",
                unitName: "total",
                helpText: "Download tokens refused."
            )
        )
        self.webhooks = WebhookMetrics(
            delivered: self.registry.makeCounter(
                descriptor: MetricNameDescriptor(
                    namespace: "airlock",
                    metricName: "webhook_deliveries",
                    unitName: "total",
                    helpText: "Notification events a webhook accepted (2xx)."
                )
            ),
            failedAttempts: self.registry.makeCounter(
                descriptor: MetricNameDescriptor(
                    namespace: "airlock",
                    metricName: "webhook_failed_attempts",
                    unitName: "total",
                    helpText: "Webhook posts that were refused or not answered in time (each is retried)."
                )
            ),
            pending: self.registry.makeGauge(
                descriptor: MetricNameDescriptor(
                    namespace: "airlock",
                    metricName: "webhook_pending",
                    unitName: "",
                    helpText: "Notification events in the outbox that their webhook has not accepted yet."
                )
            )
        )
    }

    /// Counts scanner process events: `airlock_scanner_crashes_total{cause}` (a signal, an exit, `timeout`) and
    /// `airlock_scanner_restarts_total`.
    func countScannerEvent(_ event: ScannerEvent) {
        let cause: String
        switch event {
        case .started:
            self.registry.makeCounter(
                descriptor: MetricNameDescriptor(
                    namespace: "airlock",
                    metricName: "scanner_restarts",
                    unitName: "total",
                    helpText: "Scanner processes started after one died or was killed."
                )
            ).increment()
            return
        case .crashed(_, let exit, _):
            cause = exit.label
        case .timedOut:
            cause = "timeout"
        }
        self.registry.makeCounter(
            descriptor: MetricNameDescriptor(
                namespace: "airlock",
                metricName: "scanner_crashes",
                unitName: "total",
                helpText: "Scanner processes that died (by cause) or were killed for overrunning scanner.scanTimeoutSeconds (timeout)."
            ),
            labels: [("cause", cause)]
        ).increment()
    }

    /// Counts a reload: `airlock_signature_reloads_total{outcome}` (`reloaded`, `failed`; a check that found nothing
    /// changed is not counted), `airlock_configuration_reloads_total{outcome}` (`applied`, `invalid`), and sets
    /// `airlock_signatures_loaded_timestamp_seconds` and `airlock_signature_reload_duration_seconds`.
    func countReload(_ report: ReloadReport) {
        let outcome: String?
        switch report.signatures.outcome {
        case .unchanged: outcome = nil
        case .reloaded: outcome = "reloaded"
        case .failed: outcome = "failed"
        }
        if let outcome {
            self.registry.makeCounter(
                descriptor: MetricNameDescriptor(
                    namespace: "airlock",
                    metricName: "signature_reloads",
                    unitName: "total",
                    helpText: "Signature reloads, by outcome (failed: the previous signatures kept serving)."
                ),
                labels: [("outcome", outcome)]
            ).increment()
            self.registry.makeGauge(
                descriptor: MetricNameDescriptor(
                    namespace: "airlock",
                    metricName: "signature_reload_duration",
                    unitName: "seconds",
                    helpText: "How long the last signature reload took (compile included)."
                )
            ).set(report.signatures.duration.seconds)
        }
        self.registry.makeGauge(
            descriptor: MetricNameDescriptor(
                namespace: "airlock",
                metricName: "signatures_loaded_timestamp",
                unitName: "seconds",
                helpText: "When the serving signatures finished compiling (Unix time)."
            )
        ).set(report.signatures.loadedAt.timeIntervalSince1970)
        let configuration: String? =
            report.configurationError != nil ? "invalid" : (report.configuration.map { $0.changed.isEmpty ? nil : "applied" } ?? nil)
        if let configuration {
            self.registry.makeCounter(
                descriptor: MetricNameDescriptor(
                    namespace: "airlock",
                    metricName: "configuration_reloads",
                    unitName: "total",
                    helpText: "Configuration reloads, by outcome (invalid: the file was refused and nothing changed)."
                ),
                labels: [("outcome", configuration)]
            ).increment()
        }
    }

    /// Counts retro-scan work: `airlock_retroscan_checked_total` (contents scanned again and still clean),
    /// `airlock_retroscan_recalled_total` (transfers recalled), and after each pass the gauges
    /// `airlock_retroscan_pending` and `airlock_retroscan_checked` (contents of the window the serving signatures
    /// have not / have checked).
    func countRetroscan(_ event: RetroscanEvent) {
        func counter(_ name: String, _ help: String) -> Counter {
            self.registry.makeCounter(descriptor: MetricNameDescriptor(namespace: "airlock", metricName: name, unitName: "total", helpText: help))
        }
        func gauge(_ name: String, _ help: String) -> Gauge {
            self.registry.makeGauge(descriptor: MetricNameDescriptor(namespace: "airlock", metricName: name, helpText: help))
        }
        switch event {
        case .checked:
            counter("retroscan_checked", "Contents scanned again after a signature change and still clean.").increment()
        case .recalled(_, _, let transfers):
            counter("retroscan_recalled", "Transfers recalled: delivered clean, found unclean by later signatures.").increment(by: Int64(transfers.count))
        case .passFinished(_, let progress):
            gauge("retroscan_pending", "Clean contents of the retro-scan window the serving signatures have not checked yet.").set(Double(progress.pending))
            gauge("retroscan_checked", "Clean contents of the retro-scan window the serving signatures have checked.").set(Double(progress.checked))
        }
    }

    /// Counts one recorded upload by its content class, `airlock_content_class_total{class}` (`inspected`, `opaque`).
    func countContentClass(_ contentClass: ContentClass) {
        self.contentClasses[contentClass]?.increment()
    }

    /// Counts one upload refused by a quota, `airlock_quota_refusals_total{quota}` (the quota's configuration key).
    func countQuotaRefusal(quota: String) {
        self.registry.makeCounter(
            descriptor: MetricNameDescriptor(
                namespace: "airlock",
                metricName: "quota_refusals",
                unitName: "total",
                helpText: "Uploads refused because they would exceed a quota, by quota (its configuration key)."
            ),
            labels: [("quota", quota)]
        ).increment()
    }

    /// Counts one refused request on an upload or download path; `upload` also counts it in `uploads_refused`.
    func countRefusal(path: String, reason: String, status: Int, upload: Bool) {
        self.registry.makeCounter(
            descriptor: MetricNameDescriptor(
                namespace: "airlock",
                metricName: "refusals",
                unitName: "total",
                helpText: "Requests refused on upload and download paths, by path kind, reason and status."
            ),
            labels: [("path", path), ("reason", reason), ("status", String(status))]
        ).increment()
        if upload {
            self.uploadsRefused.increment()
        }
    }
}
