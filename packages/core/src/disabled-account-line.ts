/**
 * The one thing the guard logs by itself about Qwen: an account Qwen put out of service (a key it
 * refused as invalid, arrears, a plan without this model) makes every call it served answer 503 for
 * up to an hour, and nothing else would say why. Only while the app does not listen for
 * `account_disabled` itself (an app that does logs it its own way). The line names the account by
 * its place in the options, never by id or key.
 */
import type { Emitter } from './events.js'
import type { GuardEvent, ResolvedOptions } from './types.js'

/** Adds the listener; returns what the guard's `on` calls to say the app listens now. */
export function logDisabledAccounts(events: Emitter, options: ResolvedOptions): { appListens(): void } {
  let appListens = false
  events.on('account_disabled', (event) => {
    if (!appListens) console.error(disabledAccountLine(event, options))
  })
  return {
    appListens: () => {
      appListens = true
    },
  }
}

/** e.g. `[qwen-guard] Qwen put account 1 of 2 out of service (invalid_key) until 2026-12-01T21:04:05Z: ...`. */
export function disabledAccountLine(
  event: Extract<GuardEvent, { type: 'account_disabled' }>,
  options: ResolvedOptions,
): string {
  const index = options.accounts.findIndex((account) => account.id === event.account)
  const count = options.accounts.length
  const which = count === 1 ? 'the account' : `account ${index + 1} of ${count}`
  const where = count === 1 ? 'upstream.apiKey' : `upstream.accounts[${index}]`
  const models = event.model === '*' ? 'every model' : event.model
  const until = new Date(event.untilMs).toISOString().replace(/\.\d+Z$/, 'Z')
  const hint =
    event.kind === 'invalid_key'
      ? `: Qwen refused its API key as invalid; check ${where}`
      : `: check the account in Model Studio (${where})`
  return `[qwen-guard] Qwen put ${which} out of service for ${models} (${event.kind}) until ${until}${hint}. Listen for 'account_disabled' to report this yourself.`
}
