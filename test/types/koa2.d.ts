// `koa2` is an npm alias of koa@2.16 (a dev dependency) so that the HTTP suite also runs on Koa 2. Its runtime API
// is the one @types/koa describes.
declare module 'koa2' {
  import Koa from 'koa';
  export default Koa;
}
