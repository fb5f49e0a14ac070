// The HTTP side of the client: token storage and a fetch wrapper that speaks
// the API's JSON and error shapes (design 3.2). A 401 triggers one
// transparent refresh (the refresh token rotates, so the new one is stored)
// and a single retry. Refreshes are single-flight per tab and serialised
// across tabs with a Web Lock, because two tabs presenting the same refresh
// token would look like token reuse and could revoke the whole sign-in.

const KEYS = {
  access: 'io.accessToken',
  refresh: 'io.refreshToken',
  expiresAt: 'io.accessExpiresAt',
};

/** Refresh this long before the access token expires. */
export const REFRESH_MARGIN_MS = 60_000;

/** An API failure with the server's error code and, for validation, the field. */
export class ApiError extends Error {
  constructor(status, code, message, field = null, retryAfter = null) {
    super(message || code);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.field = field;
    /** Seconds from `Retry-After`, for RATE_LIMITED. */
    this.retryAfter = retryAfter;
  }
}

// --- tokens ---------------------------------------------------------------

function storage() {
  try {
    return globalThis.localStorage ?? null;
  } catch {
    // Storage can throw when disabled (privacy modes); act signed out.
    return null;
  }
}

/** `{access, refresh, expiresAt}`; missing values are null / 0. */
export function loadTokens() {
  const s = storage();
  return {
    access: s?.getItem(KEYS.access) ?? null,
    refresh: s?.getItem(KEYS.refresh) ?? null,
    expiresAt: Number(s?.getItem(KEYS.expiresAt) ?? 0) || 0,
  };
}

/** Store the tokens of a sign-in or a refresh (`expiresIn` in seconds). */
export function saveTokens({ accessToken, refreshToken, expiresIn }) {
  const s = storage();
  if (!s) return;
  s.setItem(KEYS.access, accessToken);
  if (refreshToken) s.setItem(KEYS.refresh, refreshToken);
  const ttl = Number(expiresIn) > 0 ? Number(expiresIn) : 15 * 60;
  s.setItem(KEYS.expiresAt, String(Date.now() + ttl * 1000));
  emitAuth(true);
}

export function clearTokens() {
  const s = storage();
  if (s) for (const key of Object.values(KEYS)) s.removeItem(key);
  emitAuth(false);
}

export function isSignedIn() {
  return Boolean(loadTokens().refresh || loadTokens().access);
}

const authListeners = new Set();

/** Called with `true`/`false` when this or another tab signs in or out. */
export function onAuthChange(fn) {
  authListeners.add(fn);
  return () => authListeners.delete(fn);
}

function emitAuth(signedIn) {
  for (const fn of authListeners) fn(signedIn);
}

/** Follow sign-ins, refreshes and sign-outs made in other tabs. */
export function watchOtherTabs() {
  globalThis.addEventListener?.('storage', (event) => {
    if (event.key === KEYS.refresh || event.key === null) {
      emitAuth(Boolean(loadTokens().refresh));
    }
  });
}

// --- refresh --------------------------------------------------------------

let refreshing = null;

async function withCrossTabLock(fn) {
  const locks = globalThis.navigator?.locks;
  if (locks?.request) return locks.request('io-token-refresh', fn);
  return fn();
}

/**
 * Rotate the tokens. `staleAccess` is the access token the caller found
 * expired or rejected: if another tab already replaced it with a fresh one,
 * that one is used instead of rotating again. Rejects with UNAUTHORIZED
 * (tokens cleared) when the sign-in is gone, or a network error (tokens
 * kept) when the server could not be reached.
 */
export function refreshTokens(staleAccess = null) {
  if (!refreshing) {
    refreshing = withCrossTabLock(async () => {
      const current = loadTokens();
      if (!current.refresh) throw new ApiError(401, 'UNAUTHORIZED', 'signed out');
      const freshElsewhere =
        current.access &&
        current.access !== staleAccess &&
        current.expiresAt - Date.now() > REFRESH_MARGIN_MS;
      if (freshElsewhere) return current;
      let response;
      try {
        response = await fetch('/api/auth/refresh', {
          method: 'POST',
          headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
          body: JSON.stringify({ refreshToken: current.refresh }),
        });
      } catch {
        throw new ApiError(0, 'NETWORK_ERROR', 'could not reach the server');
      }
      if (response.ok) {
        const body = await response.json();
        saveTokens(body);
        return loadTokens();
      }
      const error = await errorFrom(response);
      // A refresh token that is invalid, expired or reused ends the sign-in;
      // a busy or failing server does not.
      if (response.status === 401 || response.status === 400 || response.status === 403) {
        clearTokens();
        throw new ApiError(401, 'UNAUTHORIZED', error.message);
      }
      throw error;
    }).finally(() => {
      refreshing = null;
    });
  }
  return refreshing;
}

/** A current access token, refreshed first when it is about to expire. */
export async function freshAccessToken() {
  const t = loadTokens();
  if (t.access && t.expiresAt - Date.now() > REFRESH_MARGIN_MS / 2) return t.access;
  if (!t.refresh) return t.access;
  const renewed = await refreshTokens(t.access);
  return renewed.access;
}

// --- requests -------------------------------------------------------------

async function errorFrom(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    // Not JSON (a proxy's error page): fall back to the status.
  }
  const e = body?.error ?? {};
  const retry = Number(response.headers.get('Retry-After'));
  return new ApiError(
    response.status,
    e.code || codeForStatus(response.status),
    e.message || response.statusText || 'request failed',
    e.field ?? null,
    Number.isFinite(retry) && retry > 0 ? retry : null,
  );
}

function codeForStatus(status) {
  return (
    {
      400: 'VALIDATION_ERROR',
      401: 'UNAUTHORIZED',
      403: 'FORBIDDEN',
      404: 'NOT_FOUND',
      409: 'CONFLICT',
      429: 'RATE_LIMITED',
    }[status] ?? (status >= 500 ? 'INTERNAL_ERROR' : 'ERROR')
  );
}

/**
 * Call the API. Resolves with the parsed JSON body (null for 204), rejects
 * with an ApiError. `auth: false` sends no token (sign-in endpoints).
 */
export async function request(method, path, body = undefined, { auth = true, signal } = {}) {
  const send = async (token) => {
    const headers = { Accept: 'application/json' };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    if (token) headers.Authorization = `Bearer ${token}`;
    try {
      return await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        signal,
      });
    } catch (e) {
      if (e?.name === 'AbortError') throw e;
      throw new ApiError(0, 'NETWORK_ERROR', 'could not reach the server');
    }
  };

  let token = auth ? await freshAccessToken() : null;
  let response = await send(token);
  if (auth && response.status === 401 && loadTokens().refresh) {
    const renewed = await refreshTokens(token);
    token = renewed.access;
    response = await send(token);
  }
  if (!response.ok) {
    const error = await errorFrom(response);
    if (auth && response.status === 401) clearTokens();
    throw error;
  }
  if (response.status === 204) return null;
  const type = response.headers.get('Content-Type') || '';
  return type.includes('json') ? response.json() : null;
}

export const api = {
  get: (path, opts) => request('GET', path, undefined, opts),
  post: (path, body = {}, opts) => request('POST', path, body, opts),
  put: (path, body = {}, opts) => request('PUT', path, body, opts),
};

/** End the sign-in on the server (best effort) and forget the tokens. */
export async function signOut() {
  const { refresh, access } = loadTokens();
  try {
    if (access || refresh) {
      await fetch('/api/auth/logout', {
        method: 'POST',
        headers: {
          'Content-Type': 'application/json',
          ...(access ? { Authorization: `Bearer ${access}` } : {}),
        },
        body: JSON.stringify(refresh ? { refreshToken: refresh } : {}),
      });
    }
  } catch {
    // Offline: the tokens are dropped locally anyway and expire server-side.
  }
  clearTokens();
}
