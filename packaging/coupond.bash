# bash completion for coupond, generated from its flag table by
# coupond::config::flags::bash_completion (tests/docs.rs keeps this file equal to it).
_coupond() {
    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}
    if [ "$COMP_CWORD" -eq 1 ]; then
        COMPREPLY=($(compgen -W "serve check status send print-test report speak-test reprint reverify --help --version" -- "$cur"))
        return
    fi
    case "$prev" in
        --config|--db|--douyin-ca|--mqtt-ca|--mqtt-password-file|--printer|--secret-file)
            COMPREPLY=($(compgen -f -- "$cur"))
            return ;;
    esac
    case "${COMP_WORDS[1]}" in
        serve) COMPREPLY=($(compgen -W "--config --listen --path --db --client-key --secret-file --max-body --printer --paper-width --store-name --printer-status --serial-baud --display-listen --exec --exec-timeout --print-actions --speaker --speaker-cmd --voice --speak-actions --output-attempts --keep-days --poi-names --day-starts --report-at --account-id --poi-id --reconcile-every --douyin-api --douyin-ca --details --details-wait --mqtt --mqtt-forward --mqtt-source --mqtt-accounts --mqtt-topic --mqtt-client-id --mqtt-ca --mqtt-username --mqtt-password-file --log-level --help" -- "$cur")) ;;
        check) COMPREPLY=($(compgen -W "--config --listen --path --db --client-key --secret-file --max-body --printer --paper-width --store-name --printer-status --serial-baud --display-listen --exec --exec-timeout --print-actions --speaker --speaker-cmd --voice --speak-actions --output-attempts --keep-days --poi-names --day-starts --report-at --account-id --poi-id --reconcile-every --douyin-api --douyin-ca --details --details-wait --mqtt --mqtt-forward --mqtt-source --mqtt-accounts --mqtt-topic --mqtt-client-id --mqtt-ca --mqtt-username --mqtt-password-file --log-level --settings-only --help" -- "$cur")) ;;
        status) COMPREPLY=($(compgen -W "--config --db --help" -- "$cur")) ;;
        send) COMPREPLY=($(compgen -W "--config --url --listen --path --client-key --secret-file --action --certificate-id --order-id --code --account-id --msg-time --log-id --challenge --help" -- "$cur")) ;;
        print-test) COMPREPLY=($(compgen -W "--config --db --printer --paper-width --store-name --printer-status --serial-baud --wait --help" -- "$cur")) ;;
        report) COMPREPLY=($(compgen -W "--config --db --date --json --print --day-starts --poi-names --keep-days --printer --paper-width --store-name --printer-status --serial-baud --wait --help" -- "$cur")) ;;
        speak-test) COMPREPLY=($(compgen -W "--config --db --speaker --speaker-cmd --voice --amount --help" -- "$cur")) ;;
        reprint) COMPREPLY=($(compgen -W "--config --db --help" -- "$cur")) ;;
        reverify) COMPREPLY=($(compgen -W "--config --db --client-key --secret-file --printer --display-listen --exec --print-actions --mqtt --mqtt-forward --speaker --speaker-cmd --speak-actions --help" -- "$cur")) ;;
    esac
}
complete -F _coupond coupond
