/**
 * What a person sees, checked inside the page: `window.whyNotSeen(el)` returns null when the whole
 * of `el` is on screen, or a sentence saying why not: hidden (display/visibility), outside the
 * viewport, clipped by a scrolling or overflow-hidden ancestor (the chat pane's fold), or covered by
 * another element at its centre. Presence in the DOM is not enough for any of these.
 *
 * Kept as page source text (installed with `page.addInitScript`) so that no transpiler helper ends
 * up inside a function Playwright serialises into the page.
 */
export const VISIBILITY_PROBE = String.raw`
window.whyNotSeen = function whyNotSeen(el) {
  const name = (node) => {
    if (!node) return 'nothing'
    const id = node.id ? '#' + node.id : ''
    const cls = typeof node.className === 'string' && node.className ? '.' + node.className.trim().split(/\s+/).join('.') : ''
    return node.tagName.toLowerCase() + id + cls
  }
  const box = (r) => '[' + [r.left, r.top, r.right, r.bottom].map((n) => Math.round(n)).join(', ') + ']'
  if (!el || !el.isConnected) return 'not in the page'
  if (!el.checkVisibility({ visibilityProperty: true })) return name(el) + ' is hidden (display or visibility)'
  const r = el.getBoundingClientRect()
  if (r.width === 0 || r.height === 0) return name(el) + ' has no size'
  const tol = 1
  if (r.top < -tol || r.left < -tol || r.bottom > innerHeight + tol || r.right > innerWidth + tol) {
    return name(el) + ' ' + box(r) + ' is outside the viewport ' + innerWidth + 'x' + innerHeight
  }
  for (let p = el.parentElement; p && p !== document.body && p !== document.documentElement; p = p.parentElement) {
    const style = getComputedStyle(p)
    if (style.overflowX === 'visible' && style.overflowY === 'visible') continue
    const b = p.getBoundingClientRect()
    const top = b.top + p.clientTop
    const left = b.left + p.clientLeft
    const clip = { top, left, bottom: top + p.clientHeight, right: left + p.clientWidth }
    if (r.top < clip.top - tol || r.left < clip.left - tol || r.bottom > clip.bottom + tol || r.right > clip.right + tol) {
      return name(el) + ' ' + box(r) + ' is clipped by ' + name(p) + ' ' + box(clip)
    }
  }
  const hit = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2)
  if (!hit || !(hit === el || el.contains(hit))) return name(el) + ' is covered by ' + name(hit)
  return null
}
`

declare global {
  interface Window {
    whyNotSeen(el: Element | null): string | null
  }
}
