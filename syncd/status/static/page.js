'use strict';
// Fills the page from /status.json every two seconds. Everything from the daemon is
// inserted as text (never as HTML): file names are data, not markup.
const REFRESH_MS = 2000;
const STATES = {in_sync: 'In sync', syncing: 'Syncing', starting: 'Starting', error: 'Error'};
let lastOk = null;

function el(tag, props, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (k === 'class') e.className = v; else e.setAttribute(k, v);
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : String(c));
  }
  return e;
}
function set(id, value, cls) {
  const e = document.getElementById(id);
  if (!e) return;
  e.textContent = value === null || value === undefined ? '-' : String(value);
  if (cls !== undefined) e.className = cls;
}
function bytes(n) {
  if (n === null || n === undefined) return '-';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n.toFixed(0) : n.toFixed(1)) + ' ' + units[i];
}
function clock(t) {
  if (!t) return 'never';
  const d = new Date(t * 1000);
  const now = new Date();
  const time = d.toLocaleTimeString();
  return d.toDateString() === now.toDateString() ? time : d.toLocaleDateString() + ' ' + time;
}
function ago(t, now) {
  if (!t) return 'never';
  const s = Math.max(0, Math.round(now - t));
  if (s < 60) return s + ' s ago';
  if (s < 3600) return Math.round(s / 60) + ' min ago';
  if (s < 86400) return Math.round(s / 3600) + ' h ago';
  return clock(t);
}
function badge(state) {
  return el('span', {class: 'badge ' + state}, STATES[state] || state);
}

function folderCard(f, now) {
  const card = el('div', {class: 'card folder', 'data-folder': f.remote_path});
  card.append(el('div', {class: 'folder-head'},
    el('h2', {}, f.remote_path), badge(f.state),
    el('span', {class: 'muted'}, f.path + ' \u2192 ' + f.remote_path)));
  const dl = el('dl', {});
  const row = (k, v, key) => dl.append(el('dt', {}, k), el('dd', {'data-k': key}, v));
  row('Files mirrored', f.files, 'files');
  row('Size', bytes(f.bytes), 'bytes');
  row('Pending', f.pending_count, 'pending');
  row('In flight', f.in_flight.length, 'in_flight');
  row('Errors', f.errors, 'errors');
  row('Held deletions', f.held_deletions ? f.held_deletions.count : 0, 'held_deletions');
  row('Last in sync', f.in_sync ? 'now' : ago(f.last_sync, now), 'last_sync');
  row('Last file mirrored', ago(f.last_synced_file, now), 'last_synced_file');
  row('Watcher', f.watcher + (f.watcher_restarts ? ' (' + f.watcher_restarts + ' restarts)' : ''),
      'watcher');
  card.append(dl);
  if (f.unavailable) {
    card.append(el('p', {class: 'warn unavailable'}, 'Folder unavailable: ' + f.unavailable));
  }
  const held = f.held_deletions;
  if (held && held.count) {
    card.append(el('p', {class: 'warn held'},
      held.count + ' deletion(s) held back since ' + clock(held.since) + ': ' + held.reason +
      ' To release them: ', el('code', {}, 'syncd sync --force-delete')));
  }
  if (f.in_flight.length) {
    const ul = el('ul', {class: 'in-flight'});
    for (const t of f.in_flight) {
      const total = t.bytes_total || 0;
      const bar = el('progress', {max: String(Math.max(total, 1)),
                                  value: String(Math.min(t.bytes_done, Math.max(total, 1)))});
      ul.append(el('li', {}, t.op + ' ', el('code', {}, t.path), ' ', bar, ' ',
        bytes(t.bytes_done) + ' of ' + bytes(total) + ', ' + bytes(t.rate) + '/s'));
    }
    card.append(el('h3', {}, 'In flight'), ul);
  }
  if (f.pending_count) {
    const ul = el('ul', {class: 'pending'});
    for (const p of f.pending.slice(0, 10)) ul.append(el('li', {}, el('code', {}, p)));
    if (f.pending_count > 10) ul.append(el('li', {class: 'muted'},
                                           'and ' + (f.pending_count - 10) + ' more'));
    card.append(el('h3', {}, 'Pending'), ul);
  }
  return card;
}

function render(doc) {
  const now = doc.time;
  const state = document.getElementById('state');
  state.className = 'badge ' + doc.state;
  state.textContent = STATES[doc.state] || doc.state;
  document.title = 'syncd: ' + (STATES[doc.state] || doc.state);
  set('summary', doc.daemon && doc.daemon.ready ? '' : 'first scan and upload running');
  set('updated', 'updated ' + clock(now));
  const r = doc.remote;
  set('r-url', r.url);
  if (r.error) set('r-reachable', r.error, 'no');
  else if (r.reachable) set('r-reachable', 'yes', 'yes');
  else set('r-reachable', 'no, since ' + clock(r.unreachable_since), 'no');
  set('r-queued', r.queued);
  set('r-last', ago(r.last_transfer, now));
  const t = doc.totals;
  for (const k of ['files', 'pending', 'in_flight', 'uploaded', 'deleted', 'moved', 'errors',
                   'retries']) set('t-' + k, t[k]);
  set('t-bytes', bytes(t.bytes));
  set('t-bytes_sent', bytes(t.bytes_sent));
  document.getElementById('folders').replaceChildren(
    ...doc.folders.map((f) => folderCard(f, now)));
  const recent = doc.recent.map((x) => el('tr', {},
    el('td', {}, clock(x.time)), el('td', {}, x.op),
    el('td', {}, x.folder + '/' + x.path + (x.to ? ' \u2192 ' + x.folder + '/' + x.to : '')),
    el('td', {}, x.bytes ? bytes(x.bytes) : ''), el('td', {}, x.seconds.toFixed(2) + ' s')));
  if (!recent.length) recent.push(el('tr', {}, el('td', {colspan: '5', class: 'muted'},
                                                  'nothing sent since the daemon started')));
  document.getElementById('recent').replaceChildren(...recent);
  const errors = doc.errors.map((e) => el('tr', {class: e.current ? 'error' : 'muted'},
    el('td', {}, clock(e.time)), el('td', {}, e.kind),
    el('td', {}, [e.folder, e.path].filter((p) => p).join('/')),
    el('td', {}, e.reason + (e.current ? '' : ' (resolved)'))));
  if (!errors.length) errors.push(el('tr', {}, el('td', {colspan: '4', class: 'muted'},
                                                  'no errors')));
  document.getElementById('errors').replaceChildren(...errors);
  const d = doc.daemon;
  const footer = document.getElementById('footer');
  footer.replaceChildren('syncd ' + d.version + ', pid ' + d.pid + ', up since ' +
    clock(d.started) + ' \u00b7 ', el('a', {href: '/status.json'}, 'status.json'), ' \u00b7 ',
    el('a', {href: '/metrics'}, 'metrics'));
}

async function refresh() {
  const banner = document.getElementById('banner');
  try {
    const resp = await fetch('/status.json', {cache: 'no-store'});
    if (!resp.ok) throw new Error('HTTP ' + resp.status);
    render(await resp.json());
    lastOk = new Date();
    banner.hidden = true;
  } catch (err) {
    banner.textContent = 'syncd is not answering (' + err.message + ')' +
      (lastOk ? '; figures as of ' + lastOk.toLocaleTimeString() : '');
    banner.hidden = false;
  } finally {
    setTimeout(refresh, REFRESH_MS);
  }
}
refresh();
