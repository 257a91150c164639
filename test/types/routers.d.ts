// `router12`, `router13` and `router14` are npm aliases of @koa/router 12, 13 and 14 (dev dependencies), so that
// nesting the registry in a host router is tested on every major version a host may run. Their runtime API is
// the one @koa/router 15's types describe, for what the tests use.
declare module 'router12' {
  import Router from '@koa/router';
  export default Router;
}
declare module 'router13' {
  import Router from '@koa/router';
  export default Router;
}
declare module 'router14' {
  import Router from '@koa/router';
  export default Router;
}
